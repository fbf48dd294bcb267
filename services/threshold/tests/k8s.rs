//! `deploy/k8s/`, the manifests a platform team applies: valid against the
//! Kubernetes schemas (the `kubernetes-validate` package, strict, installed
//! by `scripts/python-env.sh`), and true to this build: every container's
//! arguments are a command `threshold` takes, each group's readiness probe
//! names a service its `--services` serve, the pods run as the image's
//! user, and the topics Job runs `deploy/create-topics.sh` as it is.

mod common;

use common::*;

fn root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtual environment's python, with kubernetes-validate (and PyYAML).
fn python() -> String {
    python_with("kubernetes_validate:kubernetes-validate")
}

fn manifests(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.to_str().expect("path").to_owned())
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    files
}

/// `kubernetes-validate --strict` of `files`: its exit status and output.
fn validate(python: &str, files: &[String]) -> (bool, String) {
    let out = Command::new(python)
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(files)
        .output()
        .expect("kubernetes-validate");
    (out.status.success(), text(&out))
}

#[test]
fn the_manifests_are_valid_kubernetes_and_a_broken_one_is_caught() {
    let python = python();
    let files = manifests(&root().join("deploy/k8s"));
    let (ok, said) = validate(&python, &files);
    assert!(ok, "{said}");

    // The validator can fail: a field of the wrong type, and one unknown
    // to the schema (strict), are each refused.
    let dir = tempfile::tempdir().expect("dir");
    let original =
        std::fs::read_to_string(root().join("deploy/k8s/30-planning.yaml")).expect("read");
    for (what, broken) in [
        (
            "a string for replicas",
            original.replace("replicas: 2", "replicas: two"),
        ),
        (
            "an unknown field",
            original.replace(
                "podManagementPolicy: Parallel",
                "podManagementPolicy: Parallel\n  replicaz: 2",
            ),
        ),
    ] {
        assert_ne!(broken, original, "{what}: the edit applies");
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, broken).expect("write");
        let (ok, said) = validate(&python, &[file.to_str().expect("path").to_owned()]);
        assert!(!ok, "{what} passed: {said}");
    }
}

/// Every document of the manifests, as JSON (read by PyYAML).
fn documents(python: &str) -> Vec<serde_json::Value> {
    let files = manifests(&root().join("deploy/k8s"));
    let out = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]\n\
             print(json.dumps(docs))",
        ])
        .args(&files)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn the_manifests_run_commands_this_build_takes_and_probe_services_it_serves() {
    let docs = documents(&python());
    let sets: Vec<&serde_json::Value> =
        docs.iter().filter(|d| d["kind"] == "StatefulSet").collect();
    assert_eq!(sets.len(), 6, "a StatefulSet per service group");
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "threshold-config")
        .expect("the threshold-config ConfigMap");
    let fetch_wait = config["data"]["fetch-wait-ms"]
        .as_str()
        .expect("fetch-wait-ms in threshold-config");
    let dir = tempfile::tempdir().expect("dir");
    let mut groups = Vec::new();
    for set in &sets {
        let name = set["metadata"]["name"].as_str().expect("name");
        let pod = &set["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsUser"], 10001,
            "{name}: the image's user"
        );
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        let container = &pod["containers"][0];
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| {
                a.as_str()
                    .expect("a string")
                    .replace("$(THRESHOLD_LOG)", "kafka://kafka-0:9092")
                    .replace("$(THRESHOLD_TOPIC_PREFIX)", "threshold")
                    .replace("$(POD_NAME)", name)
                    .replace("$(THRESHOLD_KAFKA_FETCH_WAIT)", fetch_wait)
            })
            .collect();
        // Every flag is one `threshold` takes, with a value it takes (clap
        // refuses an unknown flag or a bad value before it prints the help).
        let mut with_help: Vec<&str> = args.iter().map(String::as_str).collect();
        with_help.push("--help");
        let out = threshold(&with_help);
        assert!(out.status.success(), "{name}: threshold {args:?}: {out:?}");
        // The vault's key-encryption key comes from the mounted Secret.
        let env = container["env"].as_array().expect("env");
        assert!(
            env.iter().any(|e| e["name"] == "THRESHOLD_VAULT_KEK_FILE"),
            "{name}: no key-encryption key"
        );
        // Its readiness probe asks for a service its --services serve.
        let services = args
            .iter()
            .position(|a| a == "--services")
            .map(|i| args[i + 1].clone())
            .expect("--services");
        let ready = container["readinessProbe"]["grpc"]["service"]
            .as_str()
            .expect("a gRPC readiness probe naming a service");
        assert_eq!(container["livenessProbe"]["grpc"]["port"], 50051, "{name}");
        let mut serve = Command::new(BIN);
        let data = dir.path().join(name);
        serve
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--services",
                &services,
                "--data",
            ])
            .arg(&data);
        let served = Served::spawn(serve, &data);
        let out = threshold(&["health", "--server", &served.url, "--service", ready]);
        assert!(
            out.status.success(),
            "{name}: {ready} not served by {services}: {out:?}"
        );
        groups.push(services);
        drop(served);
    }
    // Every service runs somewhere, and webhooks in exactly one pod.
    let all = groups.join(",");
    for service in [
        "manifest",
        "planning",
        "attempts",
        "access",
        "analytics",
        "outcomes",
        "webhooks",
    ] {
        assert!(
            all.split(',').any(|s| s == service),
            "{service} runs nowhere"
        );
    }
    let webhooks = sets
        .iter()
        .find(|s| s["metadata"]["name"] == "threshold-webhooks")
        .expect("the webhooks group");
    assert_eq!(webhooks["spec"]["replicas"], 1, "one webhooks process");
    // A disruption budget for every group.
    for set in &sets {
        let name = &set["metadata"]["name"];
        assert!(
            docs.iter()
                .any(|d| d["kind"] == "PodDisruptionBudget" && d["metadata"]["name"] == *name),
            "{name}: no PodDisruptionBudget"
        );
    }
    // The topics Job runs deploy/create-topics.sh as it is.
    let script = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "threshold-create-topics")
        .and_then(|d| d["data"]["create-topics.sh"].as_str())
        .expect("the topics script");
    let file = std::fs::read_to_string(root().join("deploy/create-topics.sh")).expect("read");
    assert_eq!(
        script, file,
        "deploy/k8s/20-topics-job.yaml holds another script"
    );
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "Job" && d["metadata"]["name"] == "threshold-topics"),
        "no topics Job"
    );
}
