//! Connecting with TLS (`rediss://`) and with passwords from an environment variable or a file,
//! against real redis-server processes (Debian's is built with TLS). Certificates are made for
//! each test with the `openssl` command. Passwords must appear nowhere: not in output, errors,
//! reports, the manifest or any file of the snapshot.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use redis::Commands;
use support::{Kind, Server};

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA, and a certificate with its key signed by it for `name` ("server": for 127.0.0.1).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=kvferry test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                ],
            );
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    &format!("/CN={name}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.crt"),
                ],
            );
        }
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).to_string_lossy().into_owned()
    }

    /// A redis-server with a plain port and a TLS port; `clients`: require client certificates.
    fn server(&self, clients: bool) -> (Server, u16) {
        let tls_port = support::free_port_any().to_string();
        let (cert, key, ca) = (self.path("server.crt"), self.path("server.key"), self.path("ca.crt"));
        let s = Server::start(
            Kind::Redis,
            &[
                ("tls-port", &tls_port),
                ("tls-cert-file", &cert),
                ("tls-key-file", &key),
                ("tls-ca-cert-file", &ca),
                ("tls-auth-clients", if clients { "yes" } else { "no" }),
            ],
        );
        let _: () = s.conn().set("over-tls", "yes").unwrap();
        (s, tls_port.parse().unwrap())
    }
}

fn export(url: &str, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("snap");
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["export", "--source", url, "--db", "0", "--progress", "none", "--out"])
        .arg(&out)
        .arg("--report")
        .arg(dir.path().join("report.json"))
        .args(extra)
        .output()
        .unwrap();
    (o, dir)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn exported_value(dir: &Path, key: &str) -> Option<String> {
    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .args(["cat", "--key", key])
        .arg(dir.join("snap"))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&o.stdout).lines().next()?.to_string();
    let j: serde_json::Value = serde_json::from_str(&line).ok()?;
    j["value"].as_str().map(String::from)
}

#[test]
fn export_over_tls_with_a_ca() {
    let pki = Pki::new();
    let (_s, port) = pki.server(false);
    let url = format!("rediss://127.0.0.1:{port}");
    let (o, dir) = export(&url, &["--tls-ca", &pki.path("ca.crt")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(exported_value(dir.path(), "over-tls").as_deref(), Some("yes"));

    // A CA that did not sign the server's certificate: one clear line, exit 2.
    let (o, _) = export(&url, &["--tls-ca", &pki.path("other-ca.crt")]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains(&url) && e.contains("not trusted") && e.contains("--tls-ca"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");

    // No CA at hand: --tls-insecure works, and warns.
    let (o, dir) = export(&url, &["--tls-insecure"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: --tls-insecure"));
    assert_eq!(exported_value(dir.path(), "over-tls").as_deref(), Some("yes"));
}

#[test]
fn tls_and_plain_ports_mixed_up() {
    let pki = Pki::new();
    let (s, port) = pki.server(false);
    let (o, _) = export(
        &format!("rediss://127.0.0.1:{}", s.port),
        &["--tls-ca", &pki.path("ca.crt")],
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("TLS") && e.contains("redis://"), "{e}");
    let (o, _) = export(&format!("redis://127.0.0.1:{port}"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains(&format!("redis://127.0.0.1:{port}")), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let pki = Pki::new();
    let (_s, port) = pki.server(true);
    let url = format!("rediss://127.0.0.1:{port}");
    let ca = pki.path("ca.crt");
    let (o, _) = export(&url, &["--tls-ca", &ca]);
    assert_eq!(o.status.code(), Some(2), "the server wants a client certificate");
    assert!(stderr(&o).contains(&url));
    let (cert, key) = (pki.path("client.crt"), pki.path("client.key"));
    let (o, dir) = export(&url, &["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(exported_value(dir.path(), "over-tls").as_deref(), Some("yes"));
}

/// Every file under `dir`, read whole.
fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn passwords_from_the_environment_or_a_file_never_show() {
    let secret = format!("pw-{}-secret", std::process::id());
    let s = Server::start(Kind::Redis, &[("requirepass", &secret)]);
    let mut c = redis::Client::open(format!("redis://:{secret}@127.0.0.1:{}", s.port))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = c.set("guarded", "v").unwrap();
    let url = s.url();
    let check = |o: &Output, dir: &Path| {
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));
        assert!(!text.contains(&secret), "the password in the output: {text}");
        for (path, bytes) in all_bytes(dir) {
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "the password in {}", path.display());
        }
    };

    let (o, dir) = export(&url, &["--password-env", "KVFERRY_TEST_SECRET"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--password-env KVFERRY_TEST_SECRET: the variable is not set"),
        "{}",
        stderr(&o)
    );

    let o = Command::new(env!("CARGO_BIN_EXE_kvferry"))
        .env("XDG_STATE_HOME", support::state_home())
        .env("KVFERRY_TEST_SECRET", &secret)
        .args([
            "export",
            "--source",
            &url,
            "--db",
            "0",
            "--progress",
            "none",
            "--password-env",
            "KVFERRY_TEST_SECRET",
        ])
        .arg("--out")
        .arg(dir.path().join("snap"))
        .arg("--report")
        .arg(dir.path().join("report.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(exported_value(dir.path(), "guarded").as_deref(), Some("v"));
    check(&o, dir.path());

    let pwfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pwfile.path(), format!("{secret}\n")).unwrap();
    let (o, dir) = export(&url, &["--password-file", pwfile.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    check(&o, dir.path());

    // No password, and a wrong one: one line naming the server, without the password.
    let (o, dir) = export(&url, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("requires a password") && stderr(&o).contains(&url),
        "{}",
        stderr(&o)
    );
    check(&o, dir.path());
    let (o, dir) = export(&format!("redis://:wrong-{secret}@127.0.0.1:{}", s.port), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("authentication failed"), "{}", stderr(&o));
    check(&o, dir.path());
}
