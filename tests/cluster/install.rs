//! Installing the suite as the README says, on a node that has never seen it: the README's
//! install lines run verbatim in fresh namespaces (mount, network, pid) where `/etc` and
//! `/usr/local` are overlays of the machine's with nothing of MOSIX in them and the node's
//! address is the example map's node 1 (on the namespace's loopback), so nothing reaches the machine's own files, network or
//! processes and everything goes with the namespaces. Then the Debian package is built and
//! installed into an empty root with dpkg.
//!
//! The build the lines run (`make`) is the test's own debug build (`PROFILE=debug`, the test's
//! target directory): the same commands, without a second build of the workspace in release.

use mosix_tests::{in_ci, require_root, tools};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The shell lines of README's install block (the fenced block after its `<!-- install` mark).
fn readme_install_lines() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mark = readme
        .find("<!-- install")
        .expect("README.md has no <!-- install --> block");
    let rest = &readme[mark..];
    let start = rest.find("```sh\n").expect("install block opening") + "```sh\n".len();
    let len = rest[start..].find("```").expect("install block end");
    rest[start..start + len].to_owned()
}

/// A stand-in for systemd's two sockets: journald's (`/run/systemd/journal/socket`, the native
/// protocol: `KEY=value` lines, or a name, a little-endian 64-bit length and the bytes) and the
/// unit's notification socket. Prints each journal entry as a JSON object and each notification
/// as `NOTIFY …`; ends with 0 once the service said `READY=1` and the journal has its "serving
/// at" line, or with 1 after 30 s.
const SYSTEMD_STANDIN: &str = r#"
import json, os, select, socket, sys, time
journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
journal.bind(sys.argv[1])
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(sys.argv[2] + ".tmp")
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
def fields(d):
    out, i = {}, 0
    while i < len(d):
        j = d.index(b"\n", i)
        line = d[i:j]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = j + 1
        else:
            k, n = line, int.from_bytes(d[j + 1:j + 9], "little")
            v = d[j + 9:j + 9 + n]
            i = j + 9 + n + 1
        out[k.decode()] = v.decode(errors="replace")
    return out
ready = started = False
deadline = time.time() + 30
while not (ready and started) and time.time() < deadline:
    r, _, _ = select.select([journal, notify], [], [], 1)
    for s in r:
        d = s.recv(65536)
        if s is notify:
            print("NOTIFY", d.decode(errors="replace").replace("\n", " "), flush=True)
            ready = ready or b"READY=1" in d.split(b"\n")
        elif d:
            e = fields(d)
            print(json.dumps(e), flush=True)
            started = started or " serving at " in e.get("MESSAGE", "")
sys.exit(0 if ready and started else 1)
"#;

/// `PROFILE` and `CARGO_TARGET_DIR` for make: the test's own build.
fn build_env(cmd: &mut Command) {
    let built = tools();
    let profile = built.file_name().unwrap().to_owned();
    cmd.env("PROFILE", profile)
        .env("CARGO_TARGET_DIR", built.parent().unwrap());
}

#[test]
fn the_readme_install_lines_give_a_running_node_with_man_pages_and_completions() {
    if !require_root("install::the_readme_install_lines_give_a_running_node") {
        return;
    }
    let lines = readme_install_lines();
    assert!(lines.contains("make install"), "{lines}");
    // Each line stops the script when it fails (set -e): no `a && b` lists, whose failure
    // the shell would let pass.
    assert!(
        !lines.contains("&&"),
        "README's install lines must be simple commands: {lines}"
    );
    let scratch = tempfile::tempdir().unwrap();
    let t = scratch.path().display().to_string();
    std::fs::write(scratch.path().join("systemd.py"), SYSTEMD_STANDIN).unwrap();
    // The scaffolding: fresh /etc and /usr/local (overlays whose upper layers show exactly what
    // the install wrote), an empty /run, the example map's node 1 address on the loopback. A
    // trap stops the node whatever happens; the pid namespace ends anything left with it.
    let script = format!(
        r#"set -e
for d in etc usr-local; do mkdir -p {t}/$d/up {t}/$d/work; done
mount -t overlay overlay -o lowerdir=/etc,upperdir={t}/etc/up,workdir={t}/etc/work /etc
mount -t overlay overlay -o lowerdir=/usr/local,upperdir={t}/usr-local/up,workdir={t}/usr-local/work /usr/local
rm -rf /etc/mosix /etc/mosix.map /etc/systemd/system/mosix.service
for f in setpe mosctl mon mosrun migrate mps mtop mosq tune mtune vcluster runon; do rm -f /usr/local/bin/$f; done
mount -t tmpfs tmpfs /run
ip link set lo up
ip addr add 192.168.10.1/24 dev lo
trap 'setpe -off >/dev/null 2>&1 || true' EXIT
export PATH=/usr/local/sbin:/usr/local/bin:$PATH
echo '--- the README lines'
set -x
{lines}
set +x
echo '--- checks'
test "$(stat -c %a /etc/mosix/secret)" = 600
man -w setpe
man -w 5 mosix.map
man -w 7 mosix
test -f /usr/local/share/bash-completion/completions/mosctl
test -f /usr/local/share/zsh/site-functions/_mosrun
test -f /usr/local/share/fish/vendor_completions.d/mon.fish
test "$(readlink /usr/local/bin/runon)" = mosrun
runon --help | grep -q 'runon NODE'
test -f /etc/mosix/mosix.toml
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /etc/systemd/system/mosix.service
fi
mosctl isup 1
setpe -off
mosctl isup 1 || test $? = 3
echo '--- as systemd starts the unit: its readiness, and its log in the journal'
mkdir -p /run/systemd/journal
python3 {t}/systemd.py /run/systemd/journal/socket /run/mosix-notify > {t}/journal.out &
standin=$!
for i in $(seq 100); do test -S /run/mosix-notify && break; sleep 0.1; done
start=$(sed -n 's/^ExecStart=//p' /etc/systemd/system/mosix.service)
: > {t}/service.err
JOURNAL_STREAM=$(stat -c %d:%i {t}/service.err) NOTIFY_SOCKET=/run/mosix-notify $start 2>> {t}/service.err &
wait $standin || {{ cat {t}/journal.out {t}/service.err; exit 1; }}
setpe -off
echo '--- journal'
cat {t}/journal.out
echo '--- standard error'
cat {t}/service.err
echo '--- installed'
cd {t}/usr-local/up && find . | sort
cd {t}/etc/up && find . | sort
"#
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        "bash",
        "-c",
        &script,
    ])
    .current_dir(root())
    .env_remove("MOSIX_ETC")
    .env_remove("MOSIX_RUNDIR");
    build_env(&mut cmd);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    // What the install wrote, seen in the overlays' upper layers.
    for want in [
        "./bin/setpe",
        "./bin/mosq",
        "./bin/fastdecay",
        "./share/man/man1/mosctl.1",
        "./share/man/man5/mosix.map.5",
        "./share/doc/mosix-rs/mosix.map.example",
        "./systemd/system/mosix.service",
        "./mosix/secret",
        "./mosix/mosix.toml",
        "./mosix.map",
    ] {
        assert!(
            said.contains(&format!("{want}\n")),
            "{want} not installed:\n{said}"
        );
    }
    assert!(said.contains("MOSIX node #1 started"), "{said}");
    // Started as the unit says, the service told its readiness and logged to the journal,
    // with its identifier and node, and nothing of it on standard error.
    let section = |name: &str| {
        let from = said.find(&format!("--- {name}\n")).expect(name) + name.len() + 5;
        let len = said[from..].find("\n---").unwrap_or(said.len() - from);
        said[from..from + len].to_owned()
    };
    let journal = section("journal");
    assert!(
        journal
            .lines()
            .any(|l| l.starts_with("NOTIFY") && l.contains("READY=1")),
        "{journal}"
    );
    let entries: Vec<serde_json::Value> = journal
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let started = entries
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains(" serving at "))
        })
        .unwrap_or_else(|| panic!("no 'serving at' in the journal:\n{journal}"));
    assert_eq!(started["SYSLOG_IDENTIFIER"], "mosix", "{started}");
    assert_eq!(started["MOSIX_NODE"], "1", "{started}");
    assert!(started["PRIORITY"].is_string(), "{started}");
    let stderr = section("standard error");
    assert!(
        !stderr.contains("started"),
        "the log went to stderr too:\n{stderr}"
    );
}

#[test]
fn the_debian_package_builds_and_installs_into_an_empty_root() {
    if !require_root("install::the_debian_package_builds_and_installs") {
        return;
    }
    let have = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            !in_ci(),
            "cargo-deb is not installed, and under CI=true a skip is a failure"
        );
        eprintln!("SKIP install::the_debian_package: needs cargo-deb (cargo install cargo-deb)");
        return;
    }
    let mut make = Command::new("make");
    make.arg("deb").current_dir(root());
    build_env(&mut make);
    let out = make.output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "make deb: {said}");
    let deb = said
        .lines()
        .rev()
        .find(|l| l.ends_with(".deb"))
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("make deb named no package: {said}"));
    let r = tempfile::tempdir().unwrap();
    let rp = r.path();
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(rp.join(d)).unwrap();
    }
    std::fs::write(rp.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let out = Command::new("dpkg")
            .arg(format!("--root={}", rp.display()))
            .args(["--force-depends", "--force-script-chrootless"])
            .args(args)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dpkg {args:?}: {said}");
        said
    };
    dpkg(&["-i", deb.to_str().unwrap()]);
    let status = dpkg(&["-s", "mosix-rs"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    let listed = dpkg(&["-L", "mosix-rs"]);
    for want in [
        "/usr/bin/setpe",
        "/usr/bin/vcluster",
        "/usr/bin/runon",
        "/usr/share/man/man1/mosrun.1.gz",
        "/usr/share/man/man7/mosix.7.gz",
        "/usr/lib/systemd/system/mosix.service",
        "/usr/share/bash-completion/completions/migrate",
        "/etc/mosix/mosix.toml",
    ] {
        assert!(
            listed.lines().any(|l| l == want),
            "{want} not in the package:\n{listed}"
        );
    }
    let v = Command::new(rp.join("usr/bin/mosctl"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success());
    assert_eq!(
        std::fs::read_link(rp.join("usr/bin/nomig")).unwrap(),
        Path::new("mosrun")
    );
    // Removing keeps the configuration (a conffile), purging removes it.
    dpkg(&["-r", "mosix-rs"]);
    assert!(!rp.join("usr/bin/setpe").exists());
    assert!(rp.join("etc/mosix/mosix.toml").exists());
    dpkg(&["-P", "mosix-rs"]);
    assert!(!rp.join("etc/mosix/mosix.toml").exists());
}
