#!/bin/sh
# docker/ cannot run here (no Docker engine), so check everything about it that can be checked
# without one: Prometheus config and alert rules (promtool check, plus promtool's unit tests of
# the alerts), every PromQL expression of the Grafana dashboard, the dashboard JSON and the
# compose/provisioning YAML, that the files refer to each other consistently (ports, paths,
# datasource uid, metric names that the daemon really exports), that docker/intentd.yaml has
# the reference's effective configuration but for the two container settings, and that
# the Dockerfile's runtime packages provide every shared library the programs link.
. tests/integration/lib.sh
command -v promtool > /dev/null || { echo "promtool not installed"; exit 77; }
if [ -n "${SAN:-}" ]; then echo "nothing sanitizer-specific, skipped under SAN=$SAN"; exit 77; fi
T=$(mktemp_state)
PY=/usr/bin/python3
D=docker

note "promtool check config / check rules / test rules"
promtool check config "$D/prometheus/prometheus.yml" || fail "promtool check config"
promtool check rules "$D/prometheus/alerts.yml" || fail "promtool check rules"
(cd "$D/prometheus" && promtool test rules alerts_test.yml) || fail "promtool test rules"

note "dashboard JSON"
$PY -m json.tool "$D/grafana/dashboards/intentd.json" > /dev/null || fail "dashboard is not JSON"

note "compose, provisioning and cross-references"
$PY - "$T" > "$T/py.log" 2>&1 << 'EOF'
import json, os, re, sys
import yaml

tmp = sys.argv[1]
errors = []
def check(cond, msg):
    if not cond:
        errors.append(msg)

def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)

compose = load_yaml("docker/compose.yaml")
svc = compose.get("services", {})
for name in ("kafka", "kafka-init", "intentd", "prometheus", "grafana"):
    check(name in svc, f"compose: no service {name}")

# Kafka: the official image, one KRaft node that is broker and controller.
k = svc.get("kafka", {})
env = k.get("environment", {})
check(str(k.get("image", "")).startswith("apache/kafka:"), "compose: kafka is not apache/kafka")
check(set(str(env.get("KAFKA_PROCESS_ROLES", "")).split(",")) == {"broker", "controller"},
      "compose: kafka is not a combined KRaft node")
for key in ("KAFKA_NODE_ID", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS",
            "KAFKA_CONTROLLER_LISTENER_NAMES", "KAFKA_CONTROLLER_QUORUM_VOTERS",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"):
    check(key in env, f"compose: kafka lacks {key}")
check(str(env.get("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR")) == "1",
      "compose: a single broker needs KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=1")
voter_id = str(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")).split("@")[0]
check(voter_id == str(env.get("KAFKA_NODE_ID")), "compose: the quorum voter is not this node")
check("PLAINTEXT://kafka:9092" in str(env.get("KAFKA_ADVERTISED_LISTENERS")),
      "compose: kafka does not advertise kafka:9092 to the containers")
check("healthcheck" in k, "compose: kafka has no healthcheck (kafka-init waits for it)")

# Topics: created idempotently, clicks and transactions with one partition count.
init = svc.get("kafka-init", {})
script = " ".join(init.get("command", []) if isinstance(init.get("command"), list)
                  else [str(init.get("command", ""))])
check("--if-not-exists" in script and "--create" in script, "compose: topics not created idempotently")
for t in ("intentd.clicks", "intentd.transactions", "intentd.dead-letter"):
    check(t in script, f"compose: topic {t} not created")
check(init.get("depends_on", {}).get("kafka", {}).get("condition") == "service_healthy",
      "compose: kafka-init does not wait for a healthy kafka")

# intentd: after the topics exist, built from the Dockerfile, config and state mounted.
i = svc.get("intentd", {})
check(i.get("depends_on", {}).get("kafka-init", {}).get("condition")
      == "service_completed_successfully", "compose: intentd does not wait for kafka-init")
build = i.get("build", {})
ctx = os.path.normpath(os.path.join("docker", build.get("context", ".")))
check(os.path.isfile(os.path.join(ctx, build.get("dockerfile", "Dockerfile"))),
      "compose: intentd's Dockerfile not found from its build context")
mounts = {}
for s in svc.values():
    for v in s.get("volumes", []):
        src, dst = v.split(":")[0], v.split(":")[1]
        mounts[dst] = src
        if src.startswith("."):
            check(os.path.exists(os.path.join("docker", src)), f"compose: {src} does not exist")
        else:
            check(src in (compose.get("volumes") or {}), f"compose: volume {src} not declared")
check(mounts.get("/etc/intentd/intentd.yaml") == "./intentd.yaml",
      "compose: docker/intentd.yaml is not mounted at /etc/intentd/intentd.yaml")
check(any(str(v).split(":")[1] == "/var/lib/intentd" for v in i.get("volumes", [])),
      "compose: intentd has no state volume")
check(str(i.get("stop_grace_period", "")) in ("60s", "1m", "90s", "2m"),
      "compose: intentd needs a stop_grace_period for its final checkpoint")

# The configuration of the container: the compose broker, all interfaces (the rest is
# compared below through --print-config).
ref, dock = load_yaml("config/intentd.yaml"), load_yaml("docker/intentd.yaml")
check(dock["kafka"]["brokers"] == "kafka:9092", "docker/intentd.yaml: brokers is not kafka:9092")
check(dock["http"]["listen"] == "0.0.0.0:8080", "docker/intentd.yaml: listen is not 0.0.0.0:8080")
check(dock["features"] == ref["features"], "docker/intentd.yaml: features differ from the reference")
check(dock.get("state_dir", "/var/lib/intentd") == "/var/lib/intentd",
      "docker/intentd.yaml: state_dir is not the image's volume")
port = "8080"

# Dockerfile: bookworm-slim, two stages, non-root, port and health check consistent.
df = open("docker/Dockerfile").read()
check("debian:bookworm-slim" in df, "Dockerfile: not on debian:bookworm-slim")
check(len(re.findall(r"^FROM ", df, re.M)) == 2, "Dockerfile: not a two-stage build")
users = re.findall(r"^USER (\S+)", df, re.M)
check(users and not users[-1].startswith(("root", "0")), "Dockerfile: runs as root")
check(re.search(rf"^EXPOSE {port}$", df, re.M), f"Dockerfile: does not EXPOSE {port}")
hc = re.search(r"^HEALTHCHECK .*(?:\n .*)*", df, re.M)
check(hc and "/healthz" in hc.group(0) and f"/{port}" in hc.group(0),
      "Dockerfile: HEALTHCHECK does not probe /healthz on the configured port")
code = "\n".join(l for l in df.splitlines() if not l.lstrip().startswith("#"))
check("-march=native" not in code, "Dockerfile: -march=native")
runtime = df[df.rindex("\nFROM "):]
pkgs = re.search(r"apt-get install[^\n]*\n((?:.*\\\n)+)", runtime)
runtime_pkgs = set(re.findall(r"\b([a-z0-9][a-z0-9.+-]+[0-9a-z])\b", pkgs.group(1))) if pkgs else set()
runtime_pkgs -= {"rm", "rf", "var", "lib", "apt", "lists"}
check(not any(p.endswith("-dev") for p in runtime_pkgs), "Dockerfile: -dev package in runtime")
with open(os.path.join(tmp, "runtime-packages"), "w") as f:
    f.write("\n".join(sorted(runtime_pkgs)) + "\n")

# Prometheus scrapes the compose service on the configured port.
prom = load_yaml("docker/prometheus/prometheus.yml")
targets = [t for j in prom["scrape_configs"] if j["job_name"] == "intentd"
           for sc in j["static_configs"] for t in sc["targets"]]
check(targets == [f"intentd:{port}"], f"prometheus: intentd target is {targets}")
check(mounts.get("/etc/prometheus") == "./prometheus", "compose: prometheus/ not mounted")

# Grafana: the datasource uid the dashboard uses, the dashboard folder compose mounts.
dsprov = load_yaml("docker/grafana/provisioning/datasources/prometheus.yml")
uids = {d["uid"] for d in dsprov["datasources"]}
check(dsprov["datasources"][0]["url"] == "http://prometheus:9090", "grafana: datasource url")
prov = load_yaml("docker/grafana/provisioning/dashboards/intentd.yml")
path = prov["providers"][0]["options"]["path"]
check(mounts.get(path) == "./grafana/dashboards", f"compose: nothing mounted at {path}")
check(mounts.get("/etc/grafana/provisioning") == "./grafana/provisioning",
      "compose: grafana provisioning not mounted")
dash = json.load(open("docker/grafana/dashboards/intentd.json"))
exprs = []
for p in dash["panels"]:
    check(p["datasource"]["uid"] in uids, f"panel {p['title']}: unknown datasource")
    for t in p["targets"]:
        check(t["datasource"]["uid"] in uids, f"panel {p['title']}: unknown datasource")
        exprs.append((p["title"], t["expr"]))
ids = [p["id"] for p in dash["panels"]]
check(len(ids) == len(set(ids)), "dashboard: duplicate panel ids")
alltext = "\n".join(e for _, e in exprs)
for need in ("intentd_events_consumed_total", "intentd_examples_total",
             "intentd_examples_trained_total", "intentd_progressive_auc",
             "intentd_progressive_logloss", "intentd_model_version", "intentd_model_age_seconds",
             "intentd_kafka_consumer_lag", "intentd_events_rejected_total"):
    check(need in alltext, f"dashboard: nothing shows {need}")
check(re.search(r"histogram_quantile\(0\.99, sum by \(le\) \(rate\(intentd_predict_duration_seconds_bucket", alltext),
      "dashboard: no predict latency quantile")
# Every dashboard expression as a recording rule, for promtool to parse.
rules = {"groups": [{"name": "dashboard", "rules": [
    {"record": f"dashboard:panel_{n}",
     "expr": e.replace("$__rate_interval", "1m").replace("$instance", ".*")}
    for n, (_, e) in enumerate(exprs)]}]}
with open(os.path.join(tmp, "dashboard-rules.yml"), "w") as f:
    yaml.safe_dump(rules, f)

# Every intentd_* metric used by the dashboard and the alerts is one the daemon exports.
alerts = open("docker/prometheus/alerts.yml").read()
used = set(re.findall(r"\b(intentd_[a-z_]+)", alltext + alerts))
used = {re.sub(r"_(bucket|sum|count)$", "", m) for m in used}  # a histogram's series
exported = open("src/expo.c").read()
for m in sorted(used):
    check(f'"{m}' in exported, f"{m} is used in docker/ but src/expo.c does not export it")

for e in errors:
    print("ERROR:", e)
print(f"{len(exprs)} dashboard expressions, {len(used)} metrics cross-checked, "
      f"{len(errors)} errors")
sys.exit(1 if errors else 0)
EOF
rc=$?
cat "$T/py.log"
[ $rc -eq 0 ] || fail "docker/ files are inconsistent"
promtool check rules "$T/dashboard-rules.yml" > "$T/promql.log" 2>&1 \
    || { cat "$T/promql.log"; fail "a dashboard expression is not valid PromQL"; }
note "every dashboard expression parses: $(grep -o '[0-9]* rules' "$T/promql.log")"

note "docker/intentd.yaml passes --check-config; its effective configuration is the reference's"
[ -x "$BIN/intentd" ] || fail "$BIN/intentd not built"
"$BIN/intentd" --check-config -c "$D/intentd.yaml" > "$T/check.log" 2>&1 \
    || { cat "$T/check.log"; fail "docker/intentd.yaml does not pass --check-config"; }
"$BIN/intentd" --print-config -c config/intentd.yaml > "$T/ref.eff" || fail "--print-config"
"$BIN/intentd" --print-config -c "$D/intentd.yaml" \
    | sed -e 's|^  brokers: kafka:9092$|  brokers: embedded|' \
          -e 's|^  listen: 0.0.0.0:8080$|  listen: 127.0.0.1:8080|' > "$T/docker.eff"
diff "$T/ref.eff" "$T/docker.eff" > "$T/eff.diff" \
    || { cat "$T/eff.diff"; fail "docker/intentd.yaml differs from the reference beyond brokers/listen"; }

# The runtime image installs exactly the named packages: together with what they depend on
# (and the base image's libc), they must provide every library the programs link.
note "runtime packages cover the linked libraries"
apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances $(cat "$T/runtime-packages") 2>/dev/null \
    | sed -n 's/^\([a-z0-9][^ <]*\)$/\1/p; s/^ *Depends: \([^ <]*\).*/\1/p' \
    | sed 's/:amd64$//' | sort -u > "$T/closure"
[ -s "$T/closure" ] || fail "apt-cache depends gave nothing"
for prog in "$BIN/intentd" "$BIN"/intentd-*; do
    [ -x "$prog" ] || continue
    ldd "$prog" | awk '$3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
    pkg=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -1 | cut -d: -f1)
    [ -n "$pkg" ] || pkg=$(dpkg -S "$lib" 2>/dev/null | head -1 | cut -d: -f1)
    [ -n "$pkg" ] || { echo "no package owns $lib"; exit 1; }
    grep -qx "$pkg" "$T/closure" || { echo "$lib ($pkg) is not provided by the runtime image"; exit 1; }
done || fail "the runtime stage lacks a library"
note "linked libraries all come from: $(tr '\n' ' ' < "$T/runtime-packages")"
echo "docker_files: ok"
