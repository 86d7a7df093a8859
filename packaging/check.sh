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
    listeners = {port_of(l["address"]) for l in cfg.get("listeners", [])}
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
    stop = re.findall(r"^TimeoutStopSec=(\S+)", unit, re.M)
    if not stop or seconds(stop[-1], "edgegate.service") <= vm_drain:
        err(f"edgegate.service: TimeoutStopSec must exceed grace_period + shutdown_delay ({vm_drain:g}s)")
except (KeyError, IndexError, TypeError, ValueError, tomllib.TOMLDecodeError) as e:
    err(f"unexpected shape while cross-checking: {type(e).__name__}: {e}")

if errors:
    sys.exit("\n".join("error: " + e for e in errors))
print("ok: manifests, image, unit and configs agree")
PY

step "kustomize renders packaging/kubernetes"
if command -v kubectl >/dev/null; then
  kubectl kustomize packaging/kubernetes >/dev/null
  echo "ok: kubectl kustomize packaging/kubernetes"
  kubectl kustomize packaging/kubernetes/gateway-api >/dev/null
  echo "ok: kubectl kustomize packaging/kubernetes/gateway-api"
else
  skip "kubectl not installed"
fi

step "edgegate check on the ConfigMap's config and the shipped default"
if [[ -x "$bin" ]]; then
  for config in "$tmp/configmap/edgegate.toml" config/edgegate.toml; do
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

printf '\nall packaging checks passed\n'
