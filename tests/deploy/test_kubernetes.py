"""Checks of deploy/k8s: every manifest validates strictly against a fixed Kubernetes version,
the kustomization and the GPU Component list what is there, and the Deployment, CronJobs, HPA,
Service, ConfigMap and Secrets agree with each other, with the images and with the workspace,
and the fleet is wired to the shared PostgreSQL case store (the cada-postgres Secret) rather than
to a per-gateway SQLite volume."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

from .layout import DATA_DIR, DEPLOY, MODELS_DIR, ROOT, RUNS_DIR
from .source_refs import command_problems, env_var_problems, gateway_config_keys

K8S = DEPLOY / "k8s"

# The Kubernetes version the manifests are validated against (kubernetes-validate ships its
# schemas; 1.33 has everything used here: autoscaling/v2, CronJob timeZone, sizeLimit).
K8S_VERSION = "1.33.0"


def manifest_files(directory: Path = K8S, recursive: bool = True) -> list[Path]:
    """The manifests under directory: every YAML file but the kustomizations."""
    found = directory.rglob("*.yaml") if recursive else directory.glob("*.yaml")
    return sorted(p for p in found if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def validation_problems(docs: list[dict], where: str) -> list[str]:
    problems = []
    for doc in docs:
        what = f"{where}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{what}: {path}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            problems.append(f"{what}: {e.message}")
    return problems


def by_kind(kind: str, directory: Path = K8S) -> list[dict]:
    return [d for p in manifest_files(directory, recursive=False) for d in load_docs(p) if d["kind"] == kind]


def test_every_manifest_validates_strictly():
    assert manifest_files(), "no manifests under deploy/k8s"
    problems = []
    for path in manifest_files():
        docs = load_docs(path)
        assert docs, f"{path} holds no document"
        problems += validation_problems(docs, str(path.relative_to(ROOT)))
    assert problems == []


def test_validation_rejects_broken_manifests(tmp_path):
    deployment = load_docs(K8S / "gateway-deployment.yaml")[0]
    unknown = copy.deepcopy(deployment)
    unknown["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "sixty"
    for broken in (unknown, wrong_type):
        path = tmp_path / "broken.yaml"
        path.write_text(yaml.safe_dump(broken))
        assert validation_problems(load_docs(path), "broken") != []
    assert validation_problems([{"apiVersion": "example.com/v1", "kind": "Nope", "metadata": {"name": "x"}}], "x")


def test_one_resource_kind_per_file():
    for path in manifest_files():
        kinds = {d["kind"] for d in load_docs(path)}
        assert len(kinds) == 1, f"{path}: {kinds}"


def kustomization_problems(directory: Path, kustomization: dict) -> list[str]:
    listed = kustomization.get("resources", [])
    problems = [f"{r} is listed but missing" for r in listed if not (directory / r).exists()]
    cpu_set = {p.name for p in manifest_files(directory, recursive=False) if not p.name.endswith(".example.yaml")}
    problems += [f"{f} is not listed in kustomization.yaml" for f in sorted(cpu_set - set(listed))]
    problems += [f"{r} is not a manifest of the CPU set" for r in listed if r not in cpu_set]
    return problems


def test_kustomization_lists_the_cpu_set():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization_problems(K8S, kustomization) == []
    dropped = copy.deepcopy(kustomization)
    dropped["resources"].remove("trainer-cronjob.yaml")
    assert kustomization_problems(K8S, dropped) == ["trainer-cronjob.yaml is not listed in kustomization.yaml"]
    extra = copy.deepcopy(kustomization)
    extra["resources"].append("secret.example.yaml")
    assert kustomization_problems(K8S, extra) != []
    gpu = yaml.safe_load((K8S / "gpu" / "kustomization.yaml").read_text())
    assert gpu["kind"] == "Component"
    patched = [p.name for p in manifest_files(K8S / "gpu", recursive=False)]
    assert sorted(p["path"] for p in gpu["patches"]) == patched


def rendered(kubectl: str, tmp_path: Path, with_gpu: bool) -> list[dict]:
    overlay = tmp_path / ("gpu" if with_gpu else "cpu")
    overlay.mkdir()
    base = os.path.relpath(K8S, overlay)
    k = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": [base]}
    if with_gpu:
        k["components"] = [f"{base}/gpu"]
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(k))
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kustomize_renders_both_sets(tmp_path, tool):
    kubectl = tool("kubectl", "only `kubectl kustomize` is wired here, not a standalone kustomize")
    cpu = rendered(kubectl, tmp_path, with_gpu=False)
    gpu = rendered(kubectl, tmp_path, with_gpu=True)
    assert validation_problems(cpu, "cpu set") == []
    assert validation_problems(gpu, "gpu set") == []
    assert sorted(d["kind"] for d in cpu) == sorted(d["kind"] for d in gpu)
    assert "nvidia.com/gpu" not in json.dumps(cpu)
    gpu_limits = [c["resources"]["limits"] for d in gpu if d["kind"] in ("Deployment", "CronJob")
                  for c in pod_spec(d)["containers"]]
    assert all(l.get("nvidia.com/gpu") == 1 for l in gpu_limits), gpu_limits


def container_command(container: dict) -> str:
    return " ".join(container.get("command", []) + container.get("args", []))


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def configmap_toml() -> dict:
    (cm,) = by_kind("ConfigMap")
    return tomllib.loads(cm["data"]["gateway.toml"])


# The Secrets the manifests read, each shown by an example that is never applied.
KEYS_SECRET = "cada-keys"
STORE_SECRET = "cada-postgres"
SECRET_EXAMPLES = {KEYS_SECRET: "secret.example.yaml", STORE_SECRET: "postgres-secret.example.yaml"}


def secret_example(name: str = KEYS_SECRET) -> dict:
    (secret,) = load_docs(K8S / SECRET_EXAMPLES[name])
    assert secret["metadata"]["name"] == name
    return secret


def secret_keys() -> dict[str, set[str]]:
    """Secret name -> its keys, for every Secret the manifests may reference."""
    return {name: set(secret_example(name)["stringData"]) for name in SECRET_EXAMPLES}


def secret_ref(env: list[dict], name: str) -> dict:
    """The secretKeyRef of the variable `name` in a container's env ({} if it has none)."""
    for e in env:
        if e["name"] == name:
            return e.get("valueFrom", {}).get("secretKeyRef", {})
    return {}


def pod_problems(doc: dict, where: str) -> list[str]:
    """What every pod here must have: non-root, read-only root, resources, known variables,
    secrets and config maps that exist, images of deploy/docker."""
    problems = []
    spec = pod_spec(doc)
    sc = spec.get("securityContext", {})
    if not sc.get("runAsNonRoot") or not sc.get("runAsUser"):
        problems.append(f"{where}: pod must run as non-root (runAsNonRoot, runAsUser)")
    secrets = secret_keys()
    (cm,) = by_kind("ConfigMap")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec.get("initContainers", []) + spec["containers"]:
        cwhere = f"{where}/{c['name']}"
        csc = c.get("securityContext", {})
        if not csc.get("readOnlyRootFilesystem") or csc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cwhere}: readOnlyRootFilesystem and no privilege escalation")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(kind, {})):
                problems.append(f"{cwhere}: resources.{kind} needs cpu and memory")
        if not re.fullmatch(r"cada(-cuda)?:[\w.-]+", c["image"]):
            problems.append(f"{cwhere}: image {c['image']} is not an image of deploy/docker")
        env = c.get("env", [])
        problems += env_var_problems([e["name"] for e in env], cwhere)
        for e in env:
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] not in secrets.get(ref["name"], set()):
                problems.append(f"{cwhere}: {e['name']} reads {ref}, not a key of the Secrets {sorted(secrets)}")
        problems += command_problems(container_command(c), cwhere)
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"])
            if v is None:
                problems.append(f"{cwhere}: mounts undeclared volume {m['name']}")
            elif "configMap" in v and v["configMap"]["name"] != cm["metadata"]["name"]:
                problems.append(f"{cwhere}: config map {v['configMap']['name']} does not exist")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            problems.append(f"{cwhere}: a writable /tmp (emptyDir) is needed with a read-only root")
    return problems


def deployment_problems(deployment: dict) -> list[str]:
    where = f"Deployment/{deployment['metadata']['name']}"
    problems = pod_problems(deployment, where)
    spec = pod_spec(deployment)
    gateways = [c for c in spec["containers"] if c["name"] == "gateway"]
    if len(gateways) != 1:
        return problems + [f"{where}: no container named gateway"]
    (c,) = gateways
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports.get("http") != 8080:
        problems.append(f"{where}: port http must be 8080")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in ("http", 8080):
            problems.append(f"{where}: {probe} must GET {path} on the http port, not {get}")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    if not mounts.get(MODELS_DIR, {}).get("readOnly"):
        problems.append(f"{where}: the model registry must be mounted read-only at {MODELS_DIR}")
    if DATA_DIR not in mounts or mounts[DATA_DIR].get("readOnly"):
        problems.append(f"{where}: the data dir {DATA_DIR} needs a writable volume")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    config = env.get("CADA_CONFIG")
    if not config or os.path.dirname(config) not in mounts:
        problems.append(f"{where}: CADA_CONFIG must point into the mounted ConfigMap")
    if env.get("CADA_LOG_FORMAT") != "json":
        problems.append(f"{where}: logs must be JSON (CADA_LOG_FORMAT=json)")
    if secret_ref(c.get("env", []), "CADA_ADMIN_KEY").get("name") != KEYS_SECRET:
        problems.append(f"{where}: the admin key must come from the Secret {KEYS_SECRET}")
    grace = configmap_toml().get("limits", {}).get("shutdown_grace_secs", 30)
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[-1]) if pre_stop and "sleep" in pre_stop[0] else 0
    if spec.get("terminationGracePeriodSeconds", 30) <= grace + sleep:
        problems.append(f"{where}: terminationGracePeriodSeconds must exceed shutdown_grace_secs ({grace}) + preStop ({sleep})")
    fetch = [i for i in spec.get("initContainers", []) if "fetch.sh" in container_command(i)]
    if not fetch:
        problems.append(f"{where}: an initContainer must run models/fetch.sh into the registry volume")
    for i in fetch:
        if not any(m["mountPath"] == MODELS_DIR and not m.get("readOnly") for m in i["volumeMounts"]):
            problems.append(f"{where}: the fetch initContainer needs {MODELS_DIR} writable")
    problems += pvc_problems(spec, where)
    problems += gateway_store_problems(deployment)
    return problems


def gateway_store_problems(deployment: dict) -> list[str]:
    """A fleet on the shared store: CADA_STORE_URL from the cada-postgres Secret, the data dir
    (embedding cache only) per pod, nothing ReadWriteOnce left, so a rolling update; adapters/
    of the shared registry writable, so POST /admin/adapter/rollback reaches every replica."""
    where = f"Deployment/{deployment['metadata']['name']}"
    problems = []
    spec = pod_spec(deployment)
    c = next(c for c in spec["containers"] if c["name"] == "gateway")
    ref = secret_ref(c.get("env", []), "CADA_STORE_URL")
    if (ref.get("name"), ref.get("key")) != (STORE_SECRET, "url"):
        problems.append(f"{where}: CADA_STORE_URL must come from the Secret {STORE_SECRET}, key url, not {ref}")
    if any(e["name"] == "CADA_STORE_URL" and "value" in e for e in c.get("env", [])):
        problems.append(f"{where}: CADA_STORE_URL must not be a literal value (it holds a password)")
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    data = volumes.get(mounts.get(DATA_DIR, {}).get("name"), {})
    if "emptyDir" not in data:
        problems.append(f"{where}: the data dir {DATA_DIR} holds only a cache with a shared store: an emptyDir, not {data}")
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    rwo = {d["metadata"]["name"] for d in by_kind("PersistentVolumeClaim") if "ReadWriteOnce" in d["spec"]["accessModes"]}
    if claims & rwo:
        problems.append(f"{where}: replicas on several nodes cannot share the ReadWriteOnce claims {sorted(claims & rwo)}")
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type") != "RollingUpdate" or strategy.get("rollingUpdate", {}).get("maxUnavailable") != 0:
        problems.append(f"{where}: strategy must be RollingUpdate with maxUnavailable 0, not {strategy}")
    adapters = mounts.get(f"{MODELS_DIR}/adapters", {})
    models = mounts.get(MODELS_DIR, {})
    if adapters.get("readOnly") or adapters.get("name") != models.get("name") or adapters.get("subPath") != "adapters":
        problems.append(f"{where}: adapters/ of the registry volume must be mounted writable (subPath adapters) for the admin rollback")
    # Made by an init container as uid 10001; a subPath the kubelet makes would be root's.
    inits = " ".join(container_command(i) for i in spec.get("initContainers", []))
    if f"mkdir -p {MODELS_DIR}/adapters" not in inits:
        problems.append(f"{where}: an initContainer must create {MODELS_DIR}/adapters before the subPath mount")
    return problems


def pvc_problems(spec: dict, where: str) -> list[str]:
    """Every claim of the pod spec is a PersistentVolumeClaim defined here."""
    claims = {v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    pvcs = {d["metadata"]["name"] for d in by_kind("PersistentVolumeClaim")}
    return [f"{where}: PersistentVolumeClaim {c} does not exist" for c in sorted(claims - pvcs)]


def cronjob_problems(cronjob: dict, gpu: bool = False) -> list[str]:
    where = f"CronJob/{cronjob['metadata']['name']}" + (" (gpu)" if gpu else "")
    problems = pod_problems(cronjob, where)
    if cronjob["spec"].get("concurrencyPolicy") != "Forbid":
        problems.append(f"{where}: concurrencyPolicy must be Forbid")
    spec = pod_spec(cronjob)
    (c,) = spec["containers"]
    command = container_command(c)
    if not re.search(r"cada-trainer schedule\b.*--once", command):
        problems.append(f"{where}: must run `cada-trainer schedule --once`, not {command!r}")
    problems += trainer_store_problems(c, where)
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    if MODELS_DIR not in mounts or mounts[MODELS_DIR].get("readOnly"):
        problems.append(f"{where}: the trainer promotes into {MODELS_DIR}: mount it writable")
    if RUNS_DIR not in mounts:
        problems.append(f"{where}: runs (schedule state, lock) need a persistent volume at {RUNS_DIR}")
    problems += pvc_problems(spec, where)
    deployment = by_kind("Deployment")[0]
    gateway_models = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "models")
    shared = gateway_models["persistentVolumeClaim"]["claimName"]
    models_volume = next((v for v in spec["volumes"] if v["name"] == mounts.get(MODELS_DIR, {}).get("name")), {})
    if models_volume.get("persistentVolumeClaim", {}).get("claimName") != shared:
        problems.append(f"{where}: must write to the registry volume the gateway reads ({shared})")
    gpus = c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    if gpu and gpus != 1:
        problems.append(f"{where}: must request nvidia.com/gpu: 1 (limits), not {gpus}")
    if gpu and not c["image"].startswith("cada-cuda:"):
        problems.append(f"{where}: needs the CUDA image (cada-cuda), not {c['image']}")
    if not gpu and gpus:
        problems.append(f"{where}: the CPU CronJob must not request a GPU")
    return problems


def trainer_store_problems(c: dict, where: str) -> list[str]:
    """The trainer reads the labelled cases straight from the shared store (`schedule --store`
    through CADA_STORE_URL from the cada-postgres Secret), not from a gateway: no gateway URL
    (it conflicts with the store) and no admin key."""
    problems = []
    env = {e["name"]: e for e in c.get("env", [])}
    command = container_command(c)
    ref = secret_ref(c.get("env", []), "CADA_STORE_URL")
    if (ref.get("name"), ref.get("key")) != (STORE_SECRET, "url"):
        problems.append(f"{where}: CADA_STORE_URL must come from the Secret {STORE_SECRET}, key url, not {ref}")
    if "CADA_GATEWAY_URL" in env or re.search(r"--gateway\b", command):
        problems.append(f"{where}: must read the store, not a gateway (CADA_GATEWAY_URL/--gateway conflict with it)")
    if "CADA_ADMIN_KEY" in env:
        problems.append(f"{where}: reading the store needs no admin key; do not hand it CADA_ADMIN_KEY")
    if re.search(r"--store\b", command):
        problems.append(f"{where}: pass the store URL through CADA_STORE_URL, not --store (the password would show in the command line)")
    return problems


def test_gateway_deployment():
    (deployment,) = by_kind("Deployment")
    assert deployment_problems(deployment) == []
    (gpu,) = by_kind("Deployment", K8S / "gpu")
    assert deployment_problems(gpu) == []
    c = pod_spec(gpu)["containers"][0]
    assert c["resources"]["limits"].get("nvidia.com/gpu") == 1 and c["image"].startswith("cada-cuda:")


def test_deployment_checks_can_fail():
    (deployment,) = by_kind("Deployment")
    swapped = copy.deepcopy(deployment)
    c = pod_spec(swapped)["containers"][0]
    c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"] = "/healthz", "/readyz"
    assert sum("Probe must GET" in p for p in deployment_problems(swapped)) == 2
    short = copy.deepcopy(deployment)
    pod_spec(short)["terminationGracePeriodSeconds"] = 30
    assert any("terminationGracePeriodSeconds" in p for p in deployment_problems(short))
    writable = copy.deepcopy(deployment)
    for m in pod_spec(writable)["containers"][0]["volumeMounts"]:
        m.pop("readOnly", None)
    assert any("read-only" in p for p in deployment_problems(writable))
    root = copy.deepcopy(deployment)
    pod_spec(root)["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    pod_spec(root)["containers"][0]["env"][0]["name"] = "CADA_CONFG"
    problems = deployment_problems(root)
    assert any("readOnlyRootFilesystem" in p for p in problems)
    assert any("CADA_CONFG" in p for p in problems)


def test_trainer_cronjobs():
    (cronjob,) = by_kind("CronJob")
    assert cronjob_problems(cronjob) == []
    (gpu,) = by_kind("CronJob", K8S / "gpu")
    assert cronjob_problems(gpu, gpu=True) == []
    assert gpu["metadata"]["name"] == cronjob["metadata"]["name"], "the GPU CronJob replaces the CPU one"


def test_cronjob_checks_can_fail():
    (cronjob,) = by_kind("CronJob")
    allow = copy.deepcopy(cronjob)
    allow["spec"]["concurrencyPolicy"] = "Allow"
    assert any("Forbid" in p for p in cronjob_problems(allow))
    assert any("nvidia.com/gpu" in p for p in cronjob_problems(cronjob, gpu=True))
    typo = copy.deepcopy(cronjob)
    c = pod_spec(typo)["containers"][0]
    c["args"] = [a.replace("--min-new-cases", "--min-cases") for a in c["args"]]
    assert any("--min-cases" in p for p in cronjob_problems(typo))
    other = copy.deepcopy(cronjob)
    pod_spec(other)["containers"][0]["args"] = ["exec cada-trainer run"]
    assert any("schedule --once" in p for p in cronjob_problems(other))


def test_store_checks_can_fail():
    (deployment,) = by_kind("Deployment")
    assert gateway_store_problems(deployment) == []
    sqlite = copy.deepcopy(deployment)
    spec = pod_spec(sqlite)
    spec["containers"][0]["env"] = [e for e in spec["containers"][0]["env"] if e["name"] != "CADA_STORE_URL"]
    data = next(v for v in spec["volumes"] if v["name"] == "data")
    data.pop("emptyDir")
    data["persistentVolumeClaim"] = {"claimName": "cada-trainer-runs"}
    sqlite["spec"]["strategy"] = {"type": "Recreate"}
    problems = gateway_store_problems(sqlite)
    assert any("CADA_STORE_URL must come from the Secret cada-postgres" in p for p in problems)
    assert any("an emptyDir" in p for p in problems)
    assert any("ReadWriteOnce claims ['cada-trainer-runs']" in p for p in problems)
    assert any("RollingUpdate" in p for p in problems)
    literal = copy.deepcopy(deployment)
    for e in pod_spec(literal)["containers"][0]["env"]:
        if e["name"] == "CADA_STORE_URL":
            e.pop("valueFrom")
            e["value"] = "postgres://cada:hunter2@db:5432/cada"
    assert any("literal" in p for p in gateway_store_problems(literal))
    wrong_key = copy.deepcopy(deployment)
    for e in pod_spec(wrong_key)["containers"][0]["env"]:
        if e["name"] == "CADA_STORE_URL":
            e["valueFrom"]["secretKeyRef"]["key"] = "uri"
    assert any("not a key of the Secrets" in p for p in deployment_problems(wrong_key))
    read_only = copy.deepcopy(deployment)
    for m in pod_spec(read_only)["containers"][0]["volumeMounts"]:
        if m["mountPath"].endswith("/adapters"):
            m["readOnly"] = True
    assert any("admin rollback" in p for p in gateway_store_problems(read_only))
    no_mkdir = copy.deepcopy(deployment)
    for i in pod_spec(no_mkdir)["initContainers"]:
        i["args"] = [a.replace("mkdir -p", "true") for a in i["args"]]
    assert any("before the subPath mount" in p for p in gateway_store_problems(no_mkdir))

    (cronjob,) = by_kind("CronJob")
    c = pod_spec(cronjob)["containers"][0]
    assert trainer_store_problems(c, "trainer") == []
    old = copy.deepcopy(c)
    old["env"] = [{"name": "CADA_GATEWAY_URL", "value": "http://cada-gateway:8080"},
                  {"name": "CADA_ADMIN_KEY", "valueFrom": {"secretKeyRef": {"name": "cada-keys", "key": "admin-key"}}}]
    problems = trainer_store_problems(old, "trainer")
    assert any("CADA_STORE_URL must come from the Secret" in p for p in problems)
    assert any("not a gateway" in p for p in problems)
    assert any("no admin key" in p for p in problems)
    flag = copy.deepcopy(c)
    flag["args"] = [a.replace("schedule --once", "schedule --gateway http://cada-gateway:8080 --once") for a in c["args"]]
    assert any("not a gateway" in p for p in trainer_store_problems(flag, "trainer"))
    on_command_line = copy.deepcopy(c)
    on_command_line["args"] = [a.replace("schedule --once", "schedule --store postgres://x --once") for a in c["args"]]
    assert any("not --store" in p for p in trainer_store_problems(on_command_line, "trainer"))


def hpa_problems(hpa: dict) -> list[str]:
    """A fleet on the shared store: at least two replicas, room to scale."""
    spec = hpa["spec"]
    low, high = spec.get("minReplicas", 1), spec["maxReplicas"]
    problems = []
    if low < 2:
        problems.append(f"HPA: minReplicas must be at least 2 (a second replica serves while one restarts), not {low}")
    if high <= low:
        problems.append(f"HPA: maxReplicas ({high}) must exceed minReplicas ({low})")
    return problems


def test_hpa_and_service():
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    (deployment,) = by_kind("Deployment")
    (service,) = by_kind("Service")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    # Replicas share the PostgreSQL case store and the RWX registry: a fleet.
    assert hpa_problems(hpa) == []
    assert hpa["spec"]["maxReplicas"] > 1 and hpa["spec"]["minReplicas"] >= 2
    single = copy.deepcopy(hpa)
    single["spec"]["minReplicas"] = single["spec"]["maxReplicas"] = 1
    assert len(hpa_problems(single)) == 2
    assert "replicas" not in deployment["spec"], "spec.replicas belongs to the HPA"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["http"]["port"] == 8080
    metrics_port = int(configmap_toml()["metrics_listen"].rsplit(":", 1)[1])
    assert ports["metrics"]["port"] == metrics_port


def toml_keys(table: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in table.items():
        dotted = f"{prefix}{k}"
        keys.add(dotted)
        if isinstance(v, dict):
            keys |= toml_keys(v, dotted + ".")
    return keys


def configmap_problems(table: dict) -> list[str]:
    known = gateway_config_keys()
    return [f"gateway.toml key '{k}' is not in configs/gateway.toml" for k in sorted(toml_keys(table) - known)]


def test_configmap_holds_a_valid_gateway_config():
    table = configmap_toml()
    assert configmap_problems(table) == []
    # Paths come from the image's environment, which would silently win over the file.
    assert not {"listen", "registry"} & set(table)
    assert "data_dir" not in table.get("store", {}) and "policy_dir" not in table.get("safety", {})
    # The store URL holds a password: a Secret, never the ConfigMap.
    assert "url" not in table.get("store", {})
    broken = copy.deepcopy(table)
    broken["engine"]["paralel"] = 2
    assert configmap_problems(broken) == ["gateway.toml key 'engine.paralel' is not in configs/gateway.toml"]


def test_secret_example_is_a_placeholder_and_not_deployed():
    text = (K8S / "secret.example.yaml").read_text()
    assert secret_keys()[KEYS_SECRET] == {"admin-key", "api-key"}
    assert all("placeholder" in v.lower() for v in secret_example()["stringData"].values())
    assert "EXAMPLE" in text.splitlines()[0]


def store_secret_problems(secret: dict, text: str, kustomization: dict) -> list[str]:
    problems = []
    if not text.startswith("# EXAMPLE ONLY"):
        problems.append("postgres-secret.example.yaml: must say EXAMPLE ONLY on its first line")
    if set(secret.get("stringData", {})) != {"url"}:
        problems.append(f"postgres-secret.example.yaml: the one key is url, not {sorted(secret.get('stringData', {}))}")
    url = secret.get("stringData", {}).get("url", "")
    m = re.fullmatch(r"postgres(?:ql)?://([^:@/]+):([^@]+)@([^:/]+):(\d+)/(\w+)", url)
    if not m:
        problems.append(f"postgres-secret.example.yaml: url is not a postgres:// URL: {url!r}")
    elif "placeholder" not in m.group(2).lower():
        problems.append("postgres-secret.example.yaml: the password must be a placeholder")
    if "sslmode=require" in url:
        problems.append("postgres-secret.example.yaml: TLS to PostgreSQL is not supported (sslmode=require fails)")
    if "kubectl create secret generic cada-postgres" not in text:
        problems.append("postgres-secret.example.yaml: must show how to create the real Secret")
    if "postgres-secret.example.yaml" in kustomization.get("resources", []):
        problems.append("postgres-secret.example.yaml: an example must not be in kustomization.yaml")
    return problems


def test_postgres_secret_example_is_a_placeholder_and_not_deployed():
    text = (K8S / "postgres-secret.example.yaml").read_text()
    secret = secret_example(STORE_SECRET)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert store_secret_problems(secret, text, kustomization) == []
    assert secret["type"] == "Opaque" and secret_keys()[STORE_SECRET] == {"url"}
    real = copy.deepcopy(secret)
    real["stringData"]["url"] = "postgres://cada:s3cret@db.internal:5432/cada?sslmode=require"
    listed = copy.deepcopy(kustomization)
    listed["resources"].append("postgres-secret.example.yaml")
    problems = store_secret_problems(real, text.replace("EXAMPLE ONLY", "Example"), listed)
    assert len(problems) == 4, problems


def test_the_manifests_deploy_no_database():
    """PostgreSQL is brought by the user: nothing here runs it or claims a volume for it."""
    kinds = {d["kind"] for p in manifest_files() for d in load_docs(p)}
    assert not kinds & {"StatefulSet"}, kinds
    images = {c["image"] for p in manifest_files() for d in load_docs(p) if d["kind"] in ("Deployment", "CronJob")
              for c in pod_spec(d).get("initContainers", []) + pod_spec(d)["containers"]}
    assert all(re.fullmatch(r"cada(-cuda)?:[\w.-]+", i) for i in images), images
    resources = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert "gateway-data-pvc.yaml" not in resources and not (K8S / "gateway-data-pvc.yaml").exists()
    assert {d["metadata"]["name"] for d in by_kind("PersistentVolumeClaim")} == {"cada-models", "cada-trainer-runs"}
