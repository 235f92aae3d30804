"""Every file in deploy/ is checked by the tool that reads it (promtool, systemd-analyze,
kubectl kustomize) where one is installed, by an infrastructure-as-code scanner (checkov), and by
structural checks that tie the files together (ports, paths, names)."""
from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .promserver import require

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_config_and_rules(tmp_path: Path) -> None:
    promtool = require("promtool")
    # The scrape config reads the metrics token from a file the operator creates beside it.
    config_dir = tmp_path / "prometheus"
    shutil.copytree(PROM, config_dir)
    (config_dir / "secrets" / "hilfarm-metrics-token").write_text("a-metrics-token\n")
    done = run(promtool, "check", "config", str(config_dir / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 rule files found" in done.stdout + done.stderr
    rules = sorted((PROM / "rules").glob("*.yml"))
    assert len(rules) == 2
    done = run(promtool, "check", "rules", *map(str, rules))
    assert done.returncode == 0, done.stdout + done.stderr


def test_alerts_fire_when_they_should() -> None:
    """promtool's rule unit tests: each alert fires on the series it is about, after its `for`."""
    promtool = require("promtool")
    done = run(promtool, "test", "rules", "hilfarm-alerts.test.yml", cwd=PROM / "tests")
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {t["alertname"] for t in yaml.safe_load((PROM / "tests" / "hilfarm-alerts.test.yml").read_text())["tests"][0]["alert_rule_test"]}
    defined = {r["alert"] for g in yaml.safe_load((PROM / "rules" / "hilfarm-alerts.yml").read_text())["groups"] for r in g["rules"]}
    assert defined == tested, f"alerts without a unit test: {defined - tested}"
    for name in ("HilfarmDeviceOffline", "HilfarmQueueStuck", "HilfarmNightlyRegression", "HilfarmDeviceThrottling"):
        assert name in defined


def test_compose_wires_controller_prometheus_and_grafana() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"controller", "prometheus", "grafana"}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in doc["volumes"], f"{name} uses undeclared volume {source}"
        for dep in svc.get("depends_on", []):
            assert dep in services
    build = services["controller"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    command = services["controller"]["command"]
    metrics_bind = command[command.index("--metrics-bind") + 1]
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]]
    assert f"controller:{metrics_bind.rsplit(':', 1)[1]}" in targets
    assert any(v.startswith("./prometheus:/etc/prometheus") for v in services["prometheus"]["volumes"])
    # Grafana reads the committed dashboards where the provisioning file says they are.
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/hilfarm.yml").read_text())["providers"][0]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert mounts[provider["options"]["path"]] == "../dashboards"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/hilfarm.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    # The controller gets the operator token and the metrics token that Prometheus sends.
    assert "HILFARM_TOKEN" in services["controller"]["environment"]
    assert "--metrics-token-file" in command
    secret = doc["secrets"]["hilfarm-metrics-token"]["file"]
    scrape = next(job for job in prom["scrape_configs"] if job["job_name"] == "hilfarm-controller")
    assert (DEPLOY / secret).resolve() == (PROM / scrape["authorization"]["credentials_file"]).resolve()
    docker = shutil.which("docker")
    if docker and run(docker, "compose", "version").returncode == 0:
        done = subprocess.run([docker, "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, HILFARM_TOKEN="an-operator-token"))
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("unit", ["hilfarm-controller.service", "hilfarm-agent.service"])
def test_systemd_units(unit: str) -> None:
    path = DEPLOY / "systemd" / unit
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}
    exec_start = parser["Service"]["ExecStart"]
    role = "controller serve" if "controller" in unit else "agent run"
    assert role in exec_start
    if "controller" in unit:
        assert "--metrics-bind" in exec_start
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze:
        done = run(analyze, "verify", str(path))
        # The binary is not installed here; anything else (unknown keys, bad values) is a defect.
        problems = [line for line in (done.stdout + done.stderr).splitlines()
                    if line.strip() and "is not executable" not in line]
        assert not problems, problems


def test_kubernetes_manifests() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes/controller.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "ServiceAccount", "PersistentVolumeClaim"} <= set(kinds)
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
    deploy, service = kinds["Deployment"], kinds["Service"]
    pod = deploy["spec"]["template"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in ports
    args = container["args"]
    assert args[args.index("--metrics-bind") + 1].endswith(f":{ports['metrics']}")
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert args[args.index("--bind") + 1].endswith(f":{ports['grpc']}")
    claim = pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    # Secrets are files, the controller serves TLS, and no default namespace is used.
    assert container.get("env") is None and container.get("envFrom") is None
    for option in ("--token-file", "--db-file", "--metrics-token-file", "--tls-cert", "--tls-key"):
        assert option in args
    assert all(d["metadata"].get("namespace") == "hilfarm" for d in docs if d["kind"] != "Namespace")
    assert claim == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    # Replicas share one artifact store: the ReadWriteMany volume, mounted where --artifacts-dir points.
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert args[args.index("--artifacts-dir") + 1] == mounts[pod["spec"]["volumes"][0]["name"]]
    kubectl = shutil.which("kubectl")
    if kubectl:
        done = run(kubectl, "kustomize", str(DEPLOY / "kubernetes"))
        assert done.returncode == 0, done.stderr
        assert len([d for d in yaml.safe_load_all(done.stdout) if d]) == len(docs)


def test_deploy_passes_the_infrastructure_as_code_scanner() -> None:
    """checkov over deploy/ (Kubernetes, kustomize, Dockerfile, secrets): no failed check; a check
    that does not apply is skipped in the file with its reason. The test script installs checkov
    into .venv-checkov."""
    checkov = os.environ.get("HILFARM_CHECKOV") or str(ROOT / ".venv-checkov" / "bin" / "checkov")
    if not os.path.exists(checkov):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"checkov is required in CI ({checkov}); scripts/test.sh installs it", pytrace=False)
        pytest.skip(f"checkov is not installed ({checkov}); scripts/test.sh installs it")
    done = subprocess.run([checkov, "-d", str(DEPLOY), "--compact", "--quiet", "--output", "json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    import json

    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [(r.get("check_type"), c["check_id"], c.get("file_path"), c.get("resource"))
              for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert not failed, failed
    assert done.returncode == 0, done.stderr[-2000:]
    checked = {r.get("check_type") for r in reports}
    assert {"kubernetes", "dockerfile"} <= checked, checked
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    assert all(c.get("suppress_comment") for c in skipped), "every skipped check says why"
