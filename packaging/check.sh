#!/usr/bin/env bash
# Offline checks of packaging/: no cluster, no Docker engine, no root needed.
# Run from the repository root:   packaging/check.sh
#
# Besides "does it parse", it checks the promises the files make to each other,
# because those break silently in production: the drain must fit in the kill
# timeout, the config must be mounted so hot reload reaches it, ports and users
# must agree between the config, the image, the manifests and the unit.
#
# EDGEGATE_BIN (default target/debug/edgegate) validates the embedded configs with
# `edgegate check`; without a built binary that step is skipped with a message.
set -euo pipefail

if [[ ! -f Cargo.toml || ! -d packaging/kubernetes ]]; then
  echo "error: run from the repository root (packaging/check.sh)" >&2
  exit 2
fi

bin="${EDGEGATE_BIN:-target/debug/edgegate}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step() { printf '\n== %s\n' "$*"; }
skip() { printf 'skip: %s\n' "$*"; }

step "YAML parses, manifests agree with each other and with the configs"
if ! python3 -c 'import yaml' 2>/dev/null; then
  python3 -m pip install --quiet pyyaml
fi
mkdir -p "$tmp/configmap"
python3 - "$tmp/configmap" <<'PY'
import glob, os, re, sys, tomllib
import yaml

out_dir = sys.argv[1]
K = "packaging/kubernetes"
errors = []


def err(msg):
    errors.append(msg)


def seconds(text, where):
    """Durations as the gateway and systemd write them: 250ms, 5s, 1m, 1h."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*", str(text))
    if not m:
        err(f"{where}: cannot read duration {text!r}")
        return 0.0
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600}[m.group(2)]
    return float(m.group(1)) * scale


def port_of(address):
    return int(str(address).rsplit(":", 1)[1])


# Every YAML file under packaging/ parses; every manifest names its kind.
objects = {}  # kind -> list of (file, doc)
for path in sorted(glob.glob("packaging/**/*.y*ml", recursive=True)):
    try:
        with open(path) as fh:
            docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    except yaml.YAMLError as e:
        err(f"{path}: {e}")
        continue
    print(f"ok: {path} parses ({len(docs)} document{'s' if len(docs) != 1 else ''})")
    if path.startswith("packaging/prometheus/"):
        continue  # Prometheus rule files, checked in their own step below
    for d in docs:
        if not isinstance(d, dict) or not d.get("apiVersion") or not d.get("kind"):
            err(f"{path}: a document without apiVersion/kind")
            continue
        if path.startswith(K + "/") and d["kind"] != "Kustomization":
            if not d.get("metadata", {}).get("name"):
                err(f"{path}: {d['kind']} without metadata.name")
            objects.setdefault(d["kind"], []).append((path, d))
if errors:
    sys.exit("\n".join("error: " + e for e in errors))


def one(kind):
    found = objects.get(kind, [])
    if len(found) != 1:
        sys.exit(f"error: {K}: expected exactly one {kind}, found {len(found)}")
    return found[0][1]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


try:
    # A manifest left out of kustomization.yaml is never applied.
    GA = f"{K}/gateway-api"
    for directory in (K, GA):
        with open(f"{directory}/kustomization.yaml") as fh:
            listed = set(yaml.safe_load(fh).get("resources", []))
        for path in sorted(glob.glob(f"{directory}/*.yaml")):
            name = os.path.basename(path)
            if name != "kustomization.yaml" and name not in listed:
                err(f"{path}: not listed in kustomization.yaml resources")

    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass",
                      "GatewayClass"}
    for kind, items in objects.items():
        for path, d in items:
            ns = d["metadata"].get("namespace")
            # The Gateway API examples show routes living in the apps' namespaces.
            if kind not in cluster_scoped and ns != "edgegate" and not path.startswith(GA + "/"):
                err(f"{path}: {kind} {d['metadata']['name']} is not in namespace edgegate")

    dep = one("Deployment")
    cm = one("ConfigMap")
    svc = one("Service")
    pdb = one("PodDisruptionBudget")
    sa = one("ServiceAccount")
    binding = one("ClusterRoleBinding")
    role = one("ClusterRole")
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"].get("labels", {})
    annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
    c = pod["containers"][0]

    # The gateway's own config, extracted for `edgegate check` in the next step.
    text = cm["data"]["edgegate.toml"]
    with open(os.path.join(out_dir, "edgegate.toml"), "w") as fh:
        fh.write(text)
    cfg = tomllib.loads(text)

    # The TLS listener ships commented (its Secret is the operator's): the block, once
    # uncommented, must be a valid listener too. It is written out with its certificate
    # paths under a directory the next step fills with a throwaway certificate.
    lines = text.splitlines()
    block = []
    for i, line in enumerate(lines):
        if line.strip() == "# [[listeners]]":
            for follow in lines[i:]:
                if not follow.startswith("# "):
                    break
                block.append(follow[2:])
            break
    if not block:
        err("configmap.yaml: no commented TLS listener (# [[listeners]] ... [listeners.tls])")
    enabled = text + "\n" + "\n".join(block) + "\n"
    tls_cfg = tomllib.loads(enabled)
    tls_listeners = [l for l in tls_cfg.get("listeners", []) if "tls" in l]
    if len(tls_listeners) != 1:
        err("configmap.yaml: the commented block does not add exactly one TLS listener")
    cert_paths = [c[k] for l in tls_listeners for c in l["tls"]["certificates"] for k in ("cert", "key")]
    cert_dirs = {os.path.dirname(p) for p in cert_paths}
    with open(os.path.join(out_dir, "edgegate-tls.toml"), "w") as fh:
        out = enabled
        for d in cert_dirs:
            out = out.replace(d + "/", os.path.join(out_dir, "tls") + "/")
        fh.write(out)

    # Selectors must select the pods, or the Service and PDB are silently empty.
    if not matches(dep["spec"]["selector"].get("matchLabels"), pod_labels):
        err("deployment.yaml: spec.selector does not match the pod template labels")
    if not matches(svc["spec"].get("selector"), pod_labels):
        err("service.yaml: selector does not match the Deployment's pods")
    if not matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels):
        err("poddisruptionbudget.yaml: selector does not match the Deployment's pods")

    # Discovery runs under the ServiceAccount the ClusterRole is bound to.
    if pod.get("serviceAccountName") != sa["metadata"]["name"]:
        err("deployment.yaml: serviceAccountName is not the edgegate ServiceAccount")
    if binding["roleRef"]["name"] != role["metadata"]["name"] or not any(
        s.get("kind") == "ServiceAccount" and s.get("name") == sa["metadata"]["name"]
        and s.get("namespace") == sa["metadata"]["namespace"]
        for s in binding.get("subjects", [])
    ):
        err("clusterrolebinding.yaml: does not bind the ClusterRole to the ServiceAccount")
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] if {"get", "list", "watch"} <= set(rule["verbs"])}
    for need in [("discovery.k8s.io", "endpointslices"), ("", "services"), ("", "endpoints")]:
        if need not in granted:
            err(f"clusterrole.yaml: no get/list/watch on {need[0] or 'core'}/{need[1]}")

    # Cluster routes: what `[kubernetes]` reads must be readable, the status it writes
    # patchable, and the classes it serves must be the ones the manifests declare.
    kube_cfg = cfg.get("kubernetes")
    if kube_cfg is not None:
        G = "gateway.networking.k8s.io"
        patchable = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
                     for r in rule["resources"] if "patch" in rule["verbs"]}
        needs, status = [("", "services"), ("", "secrets")], []
        if "gateway_class" in kube_cfg:
            needs += [(G, "gateways"), (G, "httproutes"), (G, "referencegrants")]
            status += [(G, "gateways/status"), (G, "httproutes/status")]
            readable = {(g, r) for rule in role["rules"] for g in rule["apiGroups"]
                        for r in rule["resources"] if "get" in rule["verbs"]}
            if (G, "httproutes/status") not in readable:
                err("clusterrole.yaml: no get on httproutes/status (status is read, then written back with other controllers' entries)")
            classes = [d for _, d in objects.get("GatewayClass", [])]
            if [gc["metadata"]["name"] for gc in classes] != [kube_cfg["gateway_class"]]:
                err(f"gateway-api/: expected one GatewayClass named {kube_cfg['gateway_class']!r} (the config's gateway_class)")
            for gc in classes:
                if gc["spec"].get("controllerName") != "edgegate.dev/gateway-controller":
                    err("gatewayclass.yaml: controllerName is not edgegate.dev/gateway-controller")
            gateways = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d
                        for _, d in objects.get("Gateway", [])}
            listener_ports = {port_of(l["address"]) for l in cfg.get("listeners", [])}
            for (ns, name), g in gateways.items():
                if g["spec"].get("gatewayClassName") != kube_cfg["gateway_class"]:
                    err(f"gateway.yaml: Gateway {name} is not of class {kube_cfg['gateway_class']!r}")
                for l in g["spec"].get("listeners", []):
                    if l["port"] not in listener_ports:
                        err(f"gateway.yaml: listener {l['name']} port {l['port']} has no edgegate listener (ports {sorted(listener_ports)})")
            for path, r in objects.get("HTTPRoute", []):
                for p in r["spec"].get("parentRefs", []):
                    key = (p.get("namespace", r["metadata"].get("namespace")), p["name"])
                    if key not in gateways:
                        err(f"{path}: parentRef {key[0]}/{key[1]} names no Gateway here")
        if "ingress_class" in kube_cfg:
            needs += [("networking.k8s.io", "ingresses")]
            status += [("networking.k8s.io", "ingresses/status")]
            names = [d["metadata"]["name"] for _, d in objects.get("IngressClass", [])]
            if kube_cfg["ingress_class"] not in names:
                err(f"ingressclass.yaml: no IngressClass named {kube_cfg['ingress_class']!r} (the config's ingress_class)")
        for need in needs:
            if need not in granted:
                err(f"clusterrole.yaml: no get/list/watch on {need[0] or 'core'}/{need[1]}")
        for need in status:
            if need not in patchable:
                err(f"clusterrole.yaml: no patch on {need[0]}/{need[1]}")

    # Hot reload: the ConfigMap must be mounted as a directory, at the --config path.
    args = c.get("args", [])
    config_path = args[args.index("--config") + 1] if "--config" in args else None
    if config_path is None:
        err("deployment.yaml: container args do not pass --config")
    vols = {v["name"] for v in pod.get("volumes", [])
            if v.get("configMap", {}).get("name") == cm["metadata"]["name"]}
    mounts = [m for m in c.get("volumeMounts", []) if m["name"] in vols]
    if not mounts:
        err("deployment.yaml: the ConfigMap is not mounted")
    for m in mounts:
        if "subPath" in m or "subPathExpr" in m:
            err("deployment.yaml: the ConfigMap is mounted with subPath; updates would never reach the pod")
        if config_path and (os.path.dirname(config_path) != m["mountPath"].rstrip("/")
                            or os.path.basename(config_path) not in cm["data"]):
            err(f"deployment.yaml: --config {config_path} is not a key of the mounted ConfigMap")

    # Ports: probes and scraping hit the admin address; the Service hits a listener.
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    admin = port_of(cfg["admin"]["address"])
    # Listeners enabled, or shipped commented (TLS, enabled by the operator).
    listeners = {port_of(l["address"]) for l in tls_cfg.get("listeners", [])}
    published = {p["port"] for p in svc["spec"]["ports"]}
    if not {80, 443} <= published:
        err(f"service.yaml: publishes ports {sorted(published)}, not both 80 and 443")
    if ports.get("admin") != admin:
        err(f"deployment.yaml: containerPort admin is not the config's admin port {admin}")
    if str(annotations.get("prometheus.io/port")) != str(admin):
        err(f"deployment.yaml: prometheus.io/port is not the admin port {admin}")
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("admin", admin):
            err(f"deployment.yaml: {probe} should GET {path} on the admin port")
    for p in svc["spec"]["ports"]:
        target = p.get("targetPort", p["port"])
        if target not in ports and target not in ports.values():
            err(f"service.yaml: port {p['port']} targets {target}, which the container does not declare")
        number = ports.get(target, target)
        if number not in listeners:
            err(f"service.yaml: port {p['port']} targets {target}, which no listener binds")
        if number == admin:
            err("service.yaml: publishes the admin port (/config, /metrics) to the LoadBalancer")
    for l in cfg.get("listeners", []):
        if str(l["address"]).startswith("127."):
            err(f"configmap.yaml: listener {l['name']} binds loopback; nothing outside the pod reaches it")

    # The kubelet SIGKILLs after terminationGracePeriodSeconds: the drain must fit.
    gw = cfg.get("gateway", {})
    drain = seconds(gw.get("grace_period", "10s"), "configmap.yaml") + \
        seconds(gw.get("shutdown_delay", "1s"), "configmap.yaml")
    if pod.get("terminationGracePeriodSeconds", 30) <= drain:
        err(f"deployment.yaml: terminationGracePeriodSeconds must exceed grace_period + shutdown_delay ({drain:g}s)")

    # The certificate Secret: mounted as a directory (renewals must reach the pod) at
    # the directory the TLS listener reads, and optional (pods start before it exists).
    secret_vols = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
    secret_mounts = [m for m in c.get("volumeMounts", []) if m["name"] in secret_vols]
    if not secret_mounts:
        err("deployment.yaml: no Secret mounted for the TLS listener's certificate")
    for m in secret_mounts:
        if "subPath" in m or "subPathExpr" in m:
            err("deployment.yaml: the TLS Secret is mounted with subPath; renewals would never reach the pod")
        if not secret_vols[m["name"]].get("optional"):
            err("deployment.yaml: the TLS Secret volume is not optional; pods would not start before it exists")
    if cert_dirs and not cert_dirs <= {m["mountPath"].rstrip("/") for m in secret_mounts}:
        err(f"configmap.yaml: TLS files under {sorted(cert_dirs)}, not where the Secret is mounted")

    # Scaling: an HPA owns the replica count (no `replicas` fighting it), never below 2.
    hpa = one("HorizontalPodAutoscaler")
    if "replicas" in dep["spec"]:
        err("deployment.yaml: sets replicas, which the HorizontalPodAutoscaler owns")
    ref = hpa["spec"]["scaleTargetRef"]
    if ref.get("kind") != "Deployment" or ref.get("name") != dep["metadata"]["name"]:
        err("hpa.yaml: scaleTargetRef is not the edgegate Deployment")
    if hpa["spec"].get("minReplicas", 1) < 2:
        err("hpa.yaml: minReplicas below 2")
    if pdb["spec"].get("minAvailable", 0) >= hpa["spec"].get("minReplicas", 1):
        err("poddisruptionbudget.yaml: minAvailable leaves no pod evictable at minReplicas")
    kinds = {m["type"] for m in hpa["spec"].get("metrics", [])}
    if not any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]):
        err("hpa.yaml: no CPU metric")
    if not kinds & {"Pods", "Object", "External"}:
        err("hpa.yaml: no requests-per-second (custom) metric")
    if not c.get("resources", {}).get("requests", {}).get("cpu"):
        err("deployment.yaml: no CPU request; the HPA's CPU utilisation needs one")
    spread = {t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])}
    if "kubernetes.io/hostname" not in spread:
        err("deployment.yaml: no topology spread across nodes")

    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        err("deployment.yaml: runAsNonRoot is not set")
    if not sc.get("readOnlyRootFilesystem"):
        err("deployment.yaml: readOnlyRootFilesystem is not set")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        err("deployment.yaml: capabilities do not drop ALL")

    # The image's numeric user is the one Kubernetes runs as; its ports are the pod's.
    with open("packaging/Dockerfile") as fh:
        dockerfile = fh.read()
    user = re.findall(r"^USER\s+(\d+)", dockerfile, re.M)
    run_as = sc.get("runAsUser", psc.get("runAsUser"))
    if not user or run_as is None or int(user[-1]) != run_as:
        err(f"Dockerfile USER {user[-1] if user else '?'} differs from runAsUser {run_as}")
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", dockerfile, re.M)
               for p in re.findall(r"\d+", line)}
    if not set(ports.values()) <= exposed:
        err(f"Dockerfile EXPOSE {sorted(exposed)} lacks container ports {sorted(ports.values())}")

    # systemd: the unit's user is the one sysusers creates; the drain of the config
    # a VM install starts from fits in TimeoutStopSec.
    with open("packaging/systemd/edgegate.service") as fh:
        unit = fh.read()
    with open("packaging/systemd/edgegate.sysusers.conf") as fh:
        sysusers = [l.split() for l in fh if l.strip() and not l.startswith("#")]
    unit_user = re.findall(r"^User=(\S+)", unit, re.M)
    if not unit_user or ["u", unit_user[-1]] not in [l[:2] for l in sysusers]:
        err("edgegate.service: User= is not created by edgegate.sysusers.conf")
    with open("config/edgegate.toml", "rb") as fh:
        shipped = tomllib.load(fh).get("gateway", {})
    vm_drain = seconds(shipped.get("grace_period", "10s"), "config/edgegate.toml") + \
        seconds(shipped.get("shutdown_delay", "1s"), "config/edgegate.toml")
    # Type=notify (systemd 252 has no notify-reload); NotifyAccess=all because after a
    # binary upgrade the new process, a child of the old one, claims MAINPID.
    if re.findall(r"^Type=(\S+)", unit, re.M)[-1:] != ["notify"]:
        err("edgegate.service: Type= is not notify")
    if re.findall(r"^NotifyAccess=(\S+)", unit, re.M)[-1:] != ["all"]:
        err("edgegate.service: NotifyAccess= is not all (a binary upgrade's new process could not claim MAINPID)")
    if not re.search(r"^ExecReload=.*kill -HUP \$MAINPID", unit, re.M):
        err("edgegate.service: ExecReload= does not send SIGHUP to $MAINPID")
    stop = re.findall(r"^TimeoutStopSec=(\S+)", unit, re.M)
    if not stop or seconds(stop[-1], "edgegate.service") <= vm_drain:
        err(f"edgegate.service: TimeoutStopSec must exceed grace_period + shutdown_delay ({vm_drain:g}s)")
except (KeyError, IndexError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
    err(f"unexpected shape while cross-checking: {type(e).__name__}: {e}")

if errors:
    sys.exit("\n".join("error: " + e for e in errors))
print("ok: manifests, image, unit and configs agree")
PY

step "Grafana dashboard and Prometheus alert rules"
# Which metric names they may use is checked against the binary's registry by the
# `metric_names` test (cargo test --test metric_names); here: do they parse and hold
# together as a dashboard and as rules.
python3 - <<'PY'
import json, sys
import yaml

errors = []
with open("packaging/grafana/edgegate.json") as fh:
    dash = json.load(fh)
ids = [p["id"] for p in dash["panels"]]
if len(ids) != len(set(ids)):
    errors.append("edgegate.json: panel ids repeat")
for p in dash["panels"]:
    if p["type"] == "row":
        continue
    if not p.get("targets") or not all(t.get("expr") for t in p["targets"]):
        errors.append(f"edgegate.json: panel {p['title']!r} without a query")
print(f"ok: packaging/grafana/edgegate.json parses ({len(ids)} panels)")

with open("packaging/prometheus/alerts.yaml") as fh:
    rules = yaml.safe_load(fh)
names = []
for group in rules["groups"]:
    for rule in group["rules"]:
        names.append(rule.get("alert"))
        for key in ("alert", "expr", "labels", "annotations"):
            if key not in rule:
                errors.append(f"alerts.yaml: rule {rule.get('alert')!r} without {key}")
        if rule.get("labels", {}).get("severity") not in ("info", "warning", "critical"):
            errors.append(f"alerts.yaml: rule {rule.get('alert')!r} without a known severity")
print(f"ok: packaging/prometheus/alerts.yaml parses ({len(names)} alerts)")
if errors:
    sys.exit("\n".join("error: " + e for e in errors))
PY
if command -v promtool >/dev/null; then
  promtool check rules packaging/prometheus/alerts.yaml
else
  skip "promtool not installed (Debian: apt-get install prometheus); YAML parse only"
fi

step "kustomize renders packaging/kubernetes; every object validates strictly"
if command -v kubectl >/dev/null; then
  kubectl kustomize packaging/kubernetes >"$tmp/rendered.yaml"
  echo "ok: kubectl kustomize packaging/kubernetes"
  command -v kubernetes-validate >/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate
  # --strict rejects fields the schema does not know (a typo is otherwise dropped by
  # the API server without a word). One line per object, so count them.
  if ! validated="$(kubernetes-validate --strict -k 1.33.0 "$tmp/rendered.yaml" 2>&1)"; then
    printf '%s\n' "$validated" >&2
    echo "error: kubernetes-validate --strict refused the rendered manifests" >&2
    exit 1
  fi
  objects="$(grep -c '^kind: ' "$tmp/rendered.yaml")"
  passed="$(grep -c ' passed for resource ' <<<"$validated" || true)"
  if [[ "$passed" != "$objects" ]]; then
    printf '%s\n' "$validated" >&2
    echo "error: $passed of $objects rendered objects validated" >&2
    exit 1
  fi
  echo "ok: all $objects objects validate strictly (Kubernetes 1.33)"
  kubectl kustomize packaging/kubernetes/gateway-api >/dev/null
  echo "ok: kubectl kustomize packaging/kubernetes/gateway-api"
else
  skip "kubectl not installed"
fi

step "edgegate check on the ConfigMap's config and the shipped default"
if [[ -x "$bin" ]]; then
  # A throwaway certificate for the ConfigMap's TLS listener, enabled.
  mkdir -p "$tmp/configmap/tls"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=edgegate.example \
    -addext subjectAltName=DNS:edgegate.example \
    -keyout "$tmp/configmap/tls/tls.key" -out "$tmp/configmap/tls/tls.crt" 2>/dev/null
  for config in "$tmp/configmap/edgegate.toml" "$tmp/configmap/edgegate-tls.toml" config/edgegate.toml; do
    # The spec's success contract is exit 0 *and* an `ok:` summary; requiring both
    # keeps a stub or wrong binary from passing silently.
    if ! report="$("$bin" check --config "$config" 2>&1)"; then
      printf '%s\n' "$report" >&2
      echo "error: edgegate check refused $config" >&2
      exit 1
    fi
    if ! grep -q '^ok: ' <<<"$report"; then
      printf '%s\n' "$report" >&2
      echo "error: $bin check printed no 'ok:' summary for $config" >&2
      exit 1
    fi
    printf '%s (%s)\n' "$(grep '^ok: ' <<<"$report")" "$config"
    grep '^warning: ' <<<"$report" || true
  done
else
  skip "no edgegate binary at $bin (build it, or set EDGEGATE_BIN)"
fi

step "systemd-analyze verify"
if command -v systemd-analyze >/dev/null; then
  # verify insists that ExecStart= binaries exist; point a copy of the unit at the
  # local build (or at /bin/true, to still check every directive).
  exe=/bin/true
  [[ -x "$bin" ]] && exe="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
  mkdir -p "$tmp/systemd"
  sed "s#/usr/bin/edgegate#$exe#g" packaging/systemd/edgegate.service \
    >"$tmp/systemd/edgegate.service"
  # verify exits 0 on some warnings (an unknown directive is only "ignoring"), so
  # any output counts as a failure.
  if ! verify="$(systemd-analyze verify "$tmp/systemd/edgegate.service" 2>&1)" || [[ -n "$verify" ]]; then
    printf '%s\n' "$verify" >&2
    echo "error: systemd-analyze verify packaging/systemd/edgegate.service" >&2
    exit 1
  fi
  echo "ok: systemd-analyze verify packaging/systemd/edgegate.service (ExecStart=$exe)"
else
  skip "systemd-analyze not installed"
fi

step "Debian package (cargo deb): files, conffiles, scripts, install into a throwaway root"
if ! command -v cargo-deb >/dev/null || ! command -v dpkg-deb >/dev/null; then
  skip "cargo-deb or dpkg-deb not installed (scripts/setup.sh installs cargo-deb)"
elif [[ ! -x "$bin" ]]; then
  skip "no edgegate binary at $bin"
else
  # Package the binary already built instead of a release build (minutes with LTO):
  # cargo-deb takes target/release/edgegate from CARGO_TARGET_DIR, so point that at a
  # staging directory beside the build holding a hard link to it.
  stage="$(cd "$(dirname "$bin")/.." && pwd)/deb-stage"
  rm -rf "$stage" && mkdir -p "$stage/release"
  ln "$bin" "$stage/release/edgegate" 2>/dev/null || cp "$bin" "$stage/release/edgegate"
  CARGO_TARGET_DIR="$stage" cargo deb --no-build --fast --quiet -o "$tmp/edgegate.deb" >/dev/null
  rm -rf "$stage"
  contents="$(dpkg-deb -c "$tmp/edgegate.deb")"
  unit_exec="$(sed -n 's#^ExecStart=\([^ ]*\).*#\1#p' packaging/systemd/edgegate.service)"
  for path in ".$unit_exec" ./usr/lib/systemd/system/edgegate.service \
      ./usr/lib/sysusers.d/edgegate.conf ./etc/edgegate/edgegate.toml; do
    if ! grep -q " $path\$" <<<"$contents"; then
      printf '%s\n' "$contents" >&2
      echo "error: the package lacks $path" >&2
      exit 1
    fi
  done
  if ! grep -q -- "^-rwxr-xr-x .* \.$unit_exec\$" <<<"$contents"; then
    echo "error: $unit_exec in the package is not executable" >&2
    exit 1
  fi
  info="$(dpkg-deb -I "$tmp/edgegate.deb")"
  for field in ' conffiles ' ' postinst ' ' prerm ' ' postrm ' 'Depends: libc6'; do
    if ! grep -q -- "$field" <<<"$info"; then
      printf '%s\n' "$info" >&2
      echo "error: dpkg-deb -I lacks '$field'" >&2
      exit 1
    fi
  done
  mkdir -p "$tmp/control"
  dpkg-deb -e "$tmp/edgegate.deb" "$tmp/control"
  if [[ "$(cat "$tmp/control/conffiles")" != /etc/edgegate/edgegate.toml ]]; then
    echo "error: conffiles is not exactly /etc/edgegate/edgegate.toml" >&2
    exit 1
  fi
  if ! grep -q 'systemd-sysusers' "$tmp/control/postinst"; then
    echo "error: postinst does not create the system user" >&2
    exit 1
  fi
  echo "ok: cargo deb: $(dpkg-deb -f "$tmp/edgegate.deb" Package) $(dpkg-deb -f "$tmp/edgegate.deb" Version): binary at $unit_exec, unit, sysusers, conffile, maintainer scripts"
  # dpkg --root with chrootless scripts: the maintainer scripts honour $DPKG_ROOT, so
  # the user, the unit's enablement and the permissions land in the throwaway root.
  root="$tmp/root"
  mkdir -p "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/info" "$root/etc"
  touch "$root/var/lib/dpkg/status"
  if ! out="$(dpkg --root="$root" --force-script-chrootless --force-depends --force-not-root \
      --log=/dev/null -i "$tmp/edgegate.deb" 2>&1)"; then
    printf '%s\n' "$out" >&2
    echo "error: dpkg -i into a throwaway root failed" >&2
    exit 1
  fi
  if ! grep -q '^edgegate:' "$root/etc/passwd" 2>/dev/null; then
    echo "error: installing did not create the edgegate user" >&2
    exit 1
  fi
  if [[ ! -L "$root/etc/systemd/system/multi-user.target.wants/edgegate.service" ]]; then
    echo "error: installing did not enable edgegate.service" >&2
    exit 1
  fi
  if [[ "$(stat -c %a "$root/etc/edgegate/edgegate.toml")" != 640 ]]; then
    echo "error: the installed config is not mode 0640" >&2
    exit 1
  fi
  if ! report="$("$root$unit_exec" check --config "$root/etc/edgegate/edgegate.toml" 2>&1)" ||
     ! grep -q '^ok: ' <<<"$report"; then
    printf '%s\n' "$report" >&2
    echo "error: the installed config does not pass the installed binary's check" >&2
    exit 1
  fi
  echo "ok: installed into a throwaway root: user created, unit enabled, config 0640; $report"
fi

printf '\nall packaging checks passed\n'
