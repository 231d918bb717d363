# tests/integration/lib/mesh.sh — certificates for mesh tests, made at run
# time with the openssl CLI: a root CA (ECDSA P-256) per trust domain and
# workload certificates whose URI SAN is the SPIFFE ID
# spiffe://TRUST-DOMAIN/ns/NS/sa/SA. Source after stack.sh.
#
#   mesh_ca DIR                        DIR/ca.pem, DIR/ca.key
#   mesh_cert DIR NAME SPIFFE [DAYS]   DIR/NAME.pem, DIR/NAME.key signed by DIR's CA
#   mesh_expired_cert DIR NAME SPIFFE  the same, valid only in 2020

mesh_ca() {
  mkdir -p "$1"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=strata test CA" \
    -keyout "$1/ca.key" -out "$1/ca.pem" 2>/dev/null || stack_fail "mesh_ca: openssl req"
}

mesh_cert() {
  local dir=$1 name=$2 id=$3 days=${4:-1}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null || stack_fail "mesh_cert: csr"
  printf 'subjectAltName=URI:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' "$id" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days "$days" \
    -extfile "$dir/$name.ext" -out "$dir/$name.pem" 2>/dev/null || stack_fail "mesh_cert: sign"
}

mesh_expired_cert() {
  local dir=$1 name=$2 id=$3
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name" \
    -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null || stack_fail "mesh_expired_cert: csr"
  mkdir -p "$dir/ca-db"; : >"$dir/ca-db/index.txt"; echo 01 >"$dir/ca-db/serial"
  cat >"$dir/ca-db/ca.cnf" <<CNF
[ca]
default_ca = test
[test]
database = $dir/ca-db/index.txt
serial = $dir/ca-db/serial
new_certs_dir = $dir/ca-db
default_md = sha256
policy = any
copy_extensions = none
[any]
commonName = supplied
[ext]
subjectAltName = URI:$id
extendedKeyUsage = serverAuth,clientAuth
CNF
  openssl ca -batch -config "$dir/ca-db/ca.cnf" -cert "$dir/ca.pem" -keyfile "$dir/ca.key" -extensions ext \
    -startdate 20200101000000Z -enddate 20200102000000Z -in "$dir/$name.csr" -out "$dir/$name.pem" >/dev/null 2>&1 \
    || stack_fail "mesh_expired_cert: openssl ca"
}
