/* observability.h — installs the Prometheus rules and the Alertmanager
 * config that ship in deploy/observability/ into the local Prometheus and
 * Alertmanager (docs/observability.md).
 *
 * The .yaml/.yml files in deploy/observability hold Kubernetes objects, so
 * that the same files go to a cluster running prometheus-operator:
 *   - monitoring.coreos.com/v1 PrometheusRule: its spec ({groups: [...]}) is
 *     a Prometheus rule file. Installed as PROM_RULES_DIR/<metadata.name>.yml.
 *   - v1 ConfigMap named alertmanager-config, key alertmanager.yml: the
 *     Alertmanager config. Installed as AM_CONFIG_PATH with every webhook to
 *     the control plane (a url whose path starts with /v1/alerts/webhook)
 *     pointed at ADMIN_ADDR and given `http_config.authorization: {type:
 *     Bearer, credentials_file: TOKEN_FILE}` (other http_config
 *     credentials removed). Other receivers are left as written.
 * Other kinds and other ConfigMaps are ignored (they are for the cluster).
 *
 * Both outputs are JSON, which is YAML: Prometheus, promtool, Alertmanager
 * and amtool read them as they read YAML. The YAML is converted with the
 * core schema's typing (cfg.h): plain 5 is a number, "5" a string, plain
 * true a boolean, plain null/~/empty a null; .inf and .nan, which JSON
 * cannot hold, are errors.
 */
#ifndef STRATA_CONTROL_OBSERVABILITY_H
#define STRATA_CONTROL_OBSERVABILITY_H

#include <stddef.h>

/* Reads DEPLOY_DIR/observability (not its subdirectories: dashboards/ is
 * for Grafana) and writes the files described above, each atomically, mode
 * 0644. Everything is read and checked before anything is written: on error
 * nothing is written. A missing DEPLOY_DIR/observability is not an error: 0,
 * nothing written. No alertmanager-config ConfigMap: AM_CONFIG_PATH is left
 * alone. prom_rules_dir must exist; rule files of other names in it are left
 * alone.
 *
 * Checks: YAML (cfg.h's bounds and errors); a PrometheusRule has a
 * metadata.name made of [a-z0-9.-] and spec.groups, a non-empty sequence of
 * mappings each with a string `name` and a `rules` sequence; two objects may
 * not install the same file; the ConfigMap's alertmanager.yml is a string
 * holding a YAML mapping with at least one webhook to the control plane.
 * What Prometheus checks itself (PromQL, durations) is left to it.
 *
 * Returns 0, or a negative errno with err (NUL-terminated, cut to errsz)
 * naming the file, line and field: "deploy/observability/rules.yaml:7:3:
 * spec.groups: required field is missing". Errors inside alertmanager.yml
 * carry lines of the manifest file. Blocking file I/O: not for a loop
 * thread. No global state. */
int observability_install(const char *deploy_dir, const char *prom_rules_dir, const char *am_config_path,
                          const char *admin_addr, const char *token_file, char *err, size_t errsz);

#endif
