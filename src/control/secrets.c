/* secrets.c — generated secrets, persisted in the state directory. */
#include "control/secrets.h"

#include "core/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int secrets_generator_known(const char *generator)
{
    return !strcmp(generator, "ec-p256-private-key") || !strcmp(generator, "random-32");
}

int secrets_write_file(const char *path, const char *text, size_t len, int mode)
{
    return file_write_atomic(path, text, len, (mode_t)mode);
}

static char *make_ec_key(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (key && bio && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        char *data;
        long n = BIO_get_mem_data(bio, &data);
        out = strndup(data, (size_t)n);
    }
    BIO_free(bio);
    EVP_PKEY_free(key);
    return out;
}

static char *make_random32(void)
{
    unsigned char b[32];
    char *out = malloc(65);
    if (!out || RAND_bytes(b, sizeof b) != 1) {
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return out;
}

int secrets_generated(const char *state_dir, const struct model_generated_secret *g, json_t **out, char *err,
                      size_t errsz)
{
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/secrets", state_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errsz, "%s: %s", dir, strerror(errno));
        return -errno;
    }
    snprintf(path, sizeof path, "%s/%s.json", dir, g->name);
    json_t *values = NULL;
    if (access(path, F_OK) == 0) {
        json_error_t je;
        values = json_load_file(path, 0, &je);
        if (!json_is_object(values)) {
            json_decref(values);
            snprintf(err, errsz, "%s: not a JSON object (%s): remove it to make new values", path, je.text);
            return -EINVAL;
        }
    } else {
        values = json_object();
        if (!values)
            return -ENOMEM;
    }
    bool changed = false;
    for (size_t i = 0; i < g->nkeys; i++) {
        const struct model_kv *k = &g->keys[i];
        if (json_is_string(json_object_get(values, k->key)))
            continue;
        char *v = !strcmp(k->value, "ec-p256-private-key") ? make_ec_key()
                  : !strcmp(k->value, "random-32")         ? make_random32()
                                                           : NULL;
        if (!v) {
            json_decref(values);
            snprintf(err, errsz, "GeneratedSecret %s: key %s: cannot generate \"%s\"", g->name, k->key, k->value);
            return -EINVAL;
        }
        json_object_set_new(values, k->key, json_string(v));
        free(v);
        changed = true;
    }
    if (changed) {
        char *text = json_dumps(values, JSON_INDENT(2) | JSON_SORT_KEYS);
        int rc = text ? secrets_write_file(path, text, strlen(text), 0600) : -ENOMEM;
        free(text);
        if (rc < 0) {
            json_decref(values);
            snprintf(err, errsz, "%s: %s", path, strerror(-rc));
            return rc;
        }
    }
    *out = values;
    return 0;
}
