//! The container image: built by deploy/image/build.sh into a storage of the test's own
//! (so tests share no state with each other or the machine), run by podman. It serves DNS
//! on the host network, is reproducible, has no shell, `/node-cache` is node-cache, and the
//! network tools it carries do node setup in the container's own network namespace with
//! each iptables backend (nft by default, legacy through PATH) and with node-cache's rules.
//!
//! The test packages the binary this test run built (a debug build of the same code):
//! always the current code, and no release build of minutes in CI. `build.sh` without
//! `--binary` packages the release build, as a deployment does.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hickory_proto::rr::RecordType;

const TAG: &str = "localhost/nodedns:test";

/// An image built into a temporary store, with the podman configuration this machine needs.
struct Image {
    dir: tempfile::TempDir,
    /// The digest build.sh printed.
    digest: String,
}

impl Image {
    fn build() -> Image {
        require("buildah");
        require("podman");
        require("runc");
        let dir = tempfile::tempdir().unwrap();
        // crun refuses this machine's cgroup layout (runc is used), and podman's default
        // ulimits exceed the hard limits of a CI container.
        std::fs::write(dir.path().join("containers.conf"), "[containers]\ndefault_ulimits = []\n").unwrap();
        let mut cmd = Command::new("bash");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/image/build.sh")).args(["--tag", TAG]);
        cmd.arg("--root").arg(dir.path().join("root")).arg("--runroot").arg(dir.path().join("runroot"));
        cmd.arg("--binary").arg(env!("CARGO_BIN_EXE_nodedns"));
        let out = cmd.output().expect("run build.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "build.sh failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        let digest =
            stdout.lines().last().and_then(|l| l.strip_prefix(&format!("{TAG} "))).expect("build.sh prints TAG DIGEST").to_string();
        Image { dir, digest }
    }

    fn podman(&self) -> Command {
        let d = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", d.join("containers.conf"))
            .args(["--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "none"])
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"));
        cmd
    }

    /// Runs `entrypoint args...` in a throwaway container; success and stdout plus stderr.
    fn run(&self, entrypoint: &str, args: &[&str]) -> (bool, String) {
        let out = self
            .podman()
            .args(["run", "--rm", "--pull", "never", "--network", "host", "--entrypoint", entrypoint, TAG])
            .args(args)
            .output()
            .expect("podman run");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// Starts a container in the foreground (its output to a log file), removed when dropped.
    fn start(&self, name: &str, podman_args: &[&str], args: &[&str]) -> Container<'_> {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = self
            .podman()
            .args(["run", "--rm", "--pull", "never", "--name", name])
            .args(podman_args)
            .arg(TAG)
            .args(args)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(self.dir.path().join(format!("{name}.podman.log"))).unwrap())
            .spawn()
            .expect("podman run");
        Container {
            image: self,
            name: name.to_string(),
            proc: Proc { child, name: "podman" },
            log,
            podman_log: self.dir.path().join(format!("{name}.podman.log")),
        }
    }

    fn inspect(&self, format: &str) -> String {
        let out = self.podman().args(["image", "inspect", "--format", format, TAG]).output().expect("podman image inspect");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

struct Container<'a> {
    image: &'a Image,
    name: String,
    proc: Proc,
    log: PathBuf,
    podman_log: PathBuf,
}

impl Container<'_> {
    /// What the container printed (nodedns logs to stdout) and what podman said.
    fn log(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.log), read(&self.podman_log))
    }

    /// Runs `program args...` inside the running container.
    fn exec(&self, program: &str, args: &[&str]) -> (bool, String) {
        let out = self.image.podman().args(["exec", &self.name, program]).args(args).output().expect("podman exec");
        (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }

    /// Waits until the log shows `line`, failing early if the container exits.
    fn wait_for_log(&mut self, line: &str) {
        wait_until(Duration::from_secs(20), line, || {
            if let Ok(Some(status)) = self.proc.child.try_wait() {
                panic!("container exited ({status}):\n{}", self.log());
            }
            self.log().contains(line)
        });
    }

    /// `podman stop` (SIGTERM, as the kubelet): the exit status of the container.
    fn stop(&mut self) -> std::process::ExitStatus {
        let stopped = self.image.podman().args(["stop", "--time", "10", &self.name]).output().expect("podman stop");
        assert!(stopped.status.success(), "podman stop: {}", String::from_utf8_lossy(&stopped.stderr));
        self.proc.child.wait().expect("podman run exits")
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.image.podman().args(["rm", "--force", "--time", "0", &self.name]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

#[test]
fn the_image_serves_dns_on_the_host_network_and_is_reproducible_and_shell_free() {
    let named = Named::start(&[("test.example", test_zone("test.example"))]);
    let image = Image::build();

    let (dns, metrics) = (loopback(free_port()), loopback(free_port()));
    let (listen, upstream, metrics_at) = (dns.to_string(), named.addr.to_string(), metrics.to_string());
    // No --entrypoint: the image's own `/nodedns`, given the arguments after `run`.
    let mut ctr = image.start(
        "nodedns-host",
        &["--network", "host", "--env", "RUST_LOG=info"],
        &["run", "--listen", &listen, "--upstream", &upstream, "--metrics", &metrics_at],
    );
    wait_until(Duration::from_secs(20), "/ready from the container", || {
        if let Ok(Some(status)) = ctr.proc.child.try_wait() {
            panic!("container exited ({status}):\n{}", ctr.log());
        }
        http_get(metrics, "/ready").is_some_and(|(code, _)| code == 200)
    });
    let answer = query_udp(dns, "www.test.example.", RecordType::A, 0x4242, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("no answer from the container:\n{}", ctr.log()));
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
    assert_eq!(answer.answers[0].data.to_string(), "192.0.2.1", "{answer:?}");
    assert_eq!(named.queries_for("www.test.example", "A"), 1, "the container forwarded to the test's named");
    let (_, text) = http_get(metrics, "/metrics").expect("/metrics");
    assert!(text.contains("coredns_dns_requests_total"), "{text}");
    assert!(ctr.stop().success(), "SIGTERM: clean exit:\n{}", ctr.log());
    assert!(ctr.log().contains("SIGTERM: draining"), "{}", ctr.log());

    assert_eq!(image.inspect("{{json .Config.Entrypoint}} {{json .Config.Cmd}}"), r#"["/nodedns"] ["run"]"#);
    let version = image.inspect(r#"{{index .Config.Labels "org.opencontainers.image.version"}}"#);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
    let (ok, out) = image.run("/bin/sh", &["-c", "true"]);
    assert!(!ok, "the image has a shell:\n{out}");

    // Same binary, same packages, another store: the same image, byte for byte.
    assert_eq!(Image::build().digest, image.digest, "two builds of one binary differ");
}

#[test]
fn node_cache_entry_point_and_the_network_tools_run_inside_the_image() {
    let image = Image::build();
    let (ok, out) = image.run("/node-cache", &["-version"]);
    assert!(ok && out.contains("(as node-cache)"), "{out}");
    for (tool, flag, expect) in [
        ("iptables", "-V", "(nf_tables)"),
        ("ip6tables", "-V", "(nf_tables)"),
        ("iptables-save", "-V", "(nf_tables)"),
        ("/usr/libexec/iptables-legacy/iptables", "-V", "(legacy)"),
        ("/usr/libexec/iptables-legacy/ip6tables", "-V", "(legacy)"),
        ("ip", "-V", "iproute2"),
        ("nft", "-v", "nftables"),
    ] {
        let (ok, out) = image.run(tool, &[flag]);
        assert!(ok && out.contains(expect), "{tool} {flag}:\n{out}");
    }

    // node-cache's rules (NOTRACK, comment, -C/-I) in the container's own network namespace,
    // nothing on the host's.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Corefile.base"),
        operator_sed(node_local_dns("ConfigMap")["data"]["Corefile"].as_str().unwrap(), "169.254.20.10", "cluster.local", "10.96.0.10"),
    )
    .unwrap();
    // The kubelet gives every pod a resolv.conf; with no network podman gives none.
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 192.0.2.53\n").unwrap();
    let volume = format!("{}:/etc/coredns:ro", dir.path().display());
    let resolv_conf = format!("{}/resolv.conf:/etc/resolv.conf:ro", dir.path().display());
    let mut ctr = image.start(
        "nodedns-node-cache",
        &[
            "--network",
            "none",
            "--cap-add",
            "NET_ADMIN",
            "-v",
            &volume,
            "-v",
            &resolv_conf,
            "--env",
            "KUBE_DNS_UPSTREAM_SERVICE_HOST=10.96.0.11",
            "--entrypoint",
            "/node-cache",
        ],
        &["-localip", "169.254.20.10,10.96.0.10", "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream"],
    );
    wait_until(Duration::from_secs(20), "node-cache's rules in the container", || {
        if let Ok(Some(status)) = ctr.proc.child.try_wait() {
            panic!("container exited ({status}):\n{}", ctr.log());
        }
        ctr.exec("iptables-save", &[]).1.matches("NodeLocal DNS Cache").count() == 24
    });
    let (_, addresses) = ctr.exec("ip", &["-o", "addr", "show"]);
    assert!(addresses.contains(" 169.254.20.10/32 ") && addresses.contains(" 10.96.0.10/32 "), "{addresses}");
    assert!(ctr.stop().success(), "{}", ctr.log());
}

#[test]
fn node_setup_in_the_image_uses_nft_iptables_by_default_and_legacy_when_path_says_so() {
    let image = Image::build();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("nodedns.yaml"),
        "listen: [169.254.20.10:53]\nupstreams: [127.0.0.1:5300]\nkubernetes:\n  local_answers: false\nnode:\n  setup: true\n  rules: iptables\n",
    )
    .unwrap();
    let volume = format!("{}:/etc/nodedns:ro", dir.path().display());
    for (name, path, used, unused) in [
        ("nodedns-nft", "/usr/sbin:/usr/bin", "iptables-nft-save", "iptables-legacy-save"),
        ("nodedns-legacy", "/usr/libexec/iptables-legacy:/usr/sbin:/usr/bin", "iptables-legacy-save", "iptables-nft-save"),
    ] {
        let env = format!("PATH={path}");
        let mut ctr = image.start(
            name,
            &["--network", "none", "--cap-add", "NET_ADMIN", "-v", &volume, "--env", &env, "--env", "RUST_LOG=info"],
            &["run", "--config", "/etc/nodedns/nodedns.yaml"],
        );
        ctr.wait_for_log("node packet-filter rules installed");
        let (ok, rules) = ctr.exec(used, &[]);
        assert!(ok, "{used}: {rules}");
        for rule in ["-A NODEDNS-NOTRACK -d 169.254.20.10/32 -p udp -m udp --dport 53 -j CT --notrack", "-A INPUT -j NODEDNS-ACCEPT"] {
            assert!(rules.contains(rule), "{name}: {rule} missing from {used}:\n{rules}");
        }
        let (_, other) = ctr.exec(unused, &[]);
        assert!(!other.contains("NODEDNS"), "{name}: rules in the other backend too:\n{other}");
        assert!(ctr.stop().success(), "{}", ctr.log());
        assert!(ctr.log().contains("node addresses and rules removed"), "{}", ctr.log());
    }
}
