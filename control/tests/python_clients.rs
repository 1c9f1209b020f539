//! Real grpcio clients against the device: a Python client built the way the
//! reference OpenOffload Python clients are (generated stubs, the server certificate
//! file as root of trust, `localhost`), over TLS, in both API versions, sending what
//! the Python and C++ clients send, on the shipped default and demo configs.
//!
//! Needs a Python with grpcio and grpcio-tools: set OFFLOADD_PYTHON to it (`.ci/run`
//! makes one). Without it the test prints why it skipped (a failure under `CI=true`).

use std::process::Command;

use control::testing::{skip_or_fail, TestDevice};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_clients_in_both_versions() {
    let Ok(python) = std::env::var("OFFLOADD_PYTHON") else {
        skip_or_fail("set OFFLOADD_PYTHON to a python with grpcio and grpcio-tools");
        return;
    };
    for (config, skip_closed) in [("offloadd.toml", false), ("demo.toml", true)] {
        run_on_shipped_config(&python, config, skip_closed).await;
    }
}

/// Both API versions' clients against a device started from `config/<config>`; with
/// `skip_closed` the closed-session checks are left out (the demo's traffic
/// simulator closes sessions on its own).
async fn run_on_shipped_config(python: &str, config: &str, skip_closed: bool) {
    let path = format!("{}/../config/{config}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let dev = TestDevice::start(&text).await;
    let stubs = dev.certs().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let gen = Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I", proto_dir])
        .arg(format!("--python_out={}", stubs.display()))
        .arg(format!("--grpc_python_out={}", stubs.display()))
        .args(["openoffload_v1.proto", "openoffload_v2.proto"])
        .output()
        .expect("run grpc_tools.protoc");
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let port = dev.running.as_ref().unwrap().local_addrs()[0].port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/openoffload_client.py"
    );
    for api in ["v1", "v2"] {
        let mut cmd = tokio::process::Command::new(python);
        cmd.arg(script)
            .args(["--port", &port.to_string(), "--api", api])
            .arg("--root")
            .arg(dev.cert(control::certs::SERVER_CERT))
            .arg("--stubs")
            .arg(&stubs);
        if skip_closed {
            cmd.arg("--skip-closed");
        }
        let out = cmd.output().await.expect("run the python client");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{config}, {api}: {text}");
        println!("{config}: {text}");
    }
    dev.stop().await;
}
