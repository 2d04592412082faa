//! How to reach a server, for the source side (export) and the target side (import) alike: its
//! URL, and what the URL does not carry: a password from an environment variable or a file, and
//! TLS settings for `rediss://` (a CA, a client certificate, or no verification at all).
//!
//! Passwords never leave this module in text meant for people: [`Endpoint::name`] is the URL
//! without credentials, and `Debug` prints only that.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use redis::IntoConnectionInfo;

use crate::server::conn::redact;

/// `--read-timeout`: a duration, in whole seconds (at least one).
fn parse_timeout(s: &str) -> Result<u64, String> {
    let ms = crate::util::parse_duration_ms(s)?;
    if ms < 1000 {
        return Err(format!("{s:?}: at least 1s"));
    }
    Ok(ms.div_ceil(1000))
}

/// Connection options shared by the commands that talk to servers.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConnectArgs {
    /// Take the password of every server whose URL has none from this environment variable
    /// (keeps it out of the command line and the shell history).
    #[arg(long, value_name = "VAR")]
    pub password_env: Option<String>,
    /// Take the password of every server whose URL has none from this file (its content; one
    /// trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "password_env")]
    pub password_file: Option<PathBuf>,
    /// For rediss:// servers: trust the CA certificates in this PEM file instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// For rediss:// servers that require client certificates: this certificate (PEM), with
    /// --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// For rediss:// servers: do not verify their certificates (self-signed, no CA file at
    /// hand). Anyone on the path can then read and change the data.
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_insecure: bool,
    /// How long a command may wait for its reply before it counts as lost, e.g. `30s`, `2m` (the
    /// connection is made again and the work retried; a command lost three times stops the
    /// run, naming it). In whole seconds, at least 1.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub read_timeout: u64,
    /// On Pika 3.x with its cache on: switch the cache off (CONFIG SET cache-model 0) while this
    /// command runs, and back on at its end. Pika 3.x answers PTTL from its cache without a
    /// lock, and concurrent reads corrupt the cache (the server hangs or aborts), so without
    /// this kvferry refuses to read such a server.
    #[arg(long, env = "KVFERRY_PIKA_CACHE_OFF", value_parser = clap::builder::BoolishValueParser::new())]
    pub pika_cache_off: bool,
}

/// TLS settings for rediss:// URLs.
#[derive(Default)]
struct Tls {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
    insecure: bool,
}

/// A server to connect to.
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    password: Option<String>,
    /// A Kvrocks namespace token (`--namespace-map`): sent as `AUTH token`, whatever the URL says.
    token: Option<String>,
    tls: Arc<Tls>,
    /// How long a command may wait for its reply (`--read-timeout`).
    read_timeout: std::time::Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({})", self.name())
    }
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what} {}: cannot read the file", path.display()))
}

/// A PEM file's bytes, refused at once when it holds no `-----BEGIN ...WHAT-----` block (issue
/// 11: a CA file in another format was reported as "not trusted" at connection time).
fn read_pem(path: &Path, what: &str, kind: &str) -> anyhow::Result<Vec<u8>> {
    let b = read_file(path, what)?;
    let text = String::from_utf8_lossy(&b);
    let has = text
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
    if !has {
        bail!(
            "{what} {}: holds no PEM {} (a \"-----BEGIN ...{kind}-----\" block); convert it, e.g. openssl x509 -inform der -in FILE -out FILE.pem",
            path.display(),
            kind.to_lowercase()
        );
    }
    Ok(b)
}

impl ConnectArgs {
    /// The password from --password-env or --password-file, if one was given.
    fn password(&self) -> anyhow::Result<Option<String>> {
        let pw = if let Some(var) = &self.password_env {
            match std::env::var(var) {
                Ok(p) => p,
                Err(std::env::VarError::NotPresent) => bail!("--password-env {var}: the variable is not set"),
                Err(std::env::VarError::NotUnicode(_)) => bail!("--password-env {var}: the value is not UTF-8"),
            }
        } else if let Some(path) = &self.password_file {
            let text = read_file(path, "--password-file")?;
            let text = String::from_utf8(text)
                .map_err(|_| anyhow!("--password-file {}: the password is not UTF-8", path.display()))?;
            let pw = text.strip_suffix('\n').unwrap_or(&text);
            pw.strip_suffix('\r').unwrap_or(pw).to_string()
        } else {
            return Ok(None);
        };
        if pw.is_empty() {
            let from = match (&self.password_env, &self.password_file) {
                (Some(v), _) => format!("--password-env {v}"),
                (_, Some(p)) => format!("--password-file {}", p.display()),
                _ => unreachable!("BUG: one of them was given"),
            };
            bail!("{from}: the password is empty");
        }
        Ok(Some(pw))
    }

    /// The endpoints for `urls`, with these options applied; checks what can be checked before
    /// connecting (files readable, TLS options only with rediss:// URLs).
    pub fn endpoints(&self, urls: &[String]) -> anyhow::Result<Vec<Endpoint>> {
        for u in urls {
            check_no_database(u)?;
        }
        let password = self.password()?;
        let tls_asked = self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_insecure;
        if tls_asked && !urls.iter().any(|u| u.starts_with("rediss://")) {
            bail!("--tls-ca, --tls-cert and --tls-insecure apply to rediss:// URLs, and none is given");
        }
        let tls = Tls {
            ca: self
                .tls_ca
                .as_deref()
                .map(|p| read_pem(p, "--tls-ca", "CERTIFICATE"))
                .transpose()?,
            client: match (&self.tls_cert, &self.tls_key) {
                (Some(c), Some(k)) => Some((
                    read_pem(c, "--tls-cert", "CERTIFICATE")?,
                    read_pem(k, "--tls-key", "PRIVATE KEY")?,
                )),
                _ => None,
            },
            insecure: self.tls_insecure,
        };
        if tls.insecure {
            crate::note!(
                "warning: --tls-insecure: the certificates of rediss:// servers are not verified; anyone on the path can read and change the data"
            );
        }
        let tls = Arc::new(tls);
        Ok(urls
            .iter()
            .map(|u| Endpoint {
                url: u.clone(),
                password: password.clone(),
                token: None,
                tls: tls.clone(),
                read_timeout: std::time::Duration::from_secs(self.read_timeout.max(1)),
            })
            .collect())
    }
}

/// Refuses a URL that names a database (`redis://host:port/5`): the databases a command reads
/// or writes come from its options, and a database in the URL would be ignored silently or
/// fight them (issue 11: `--target redis://h:p/5` wrote into db 0).
fn check_no_database(url: &str) -> anyhow::Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    match host.split_once('/') {
        Some((_, db)) if !db.is_empty() => bail!(
            "{}: kvferry does not take a database from the URL (here {db:?}); give the server as {} and choose databases with --db (export) or map them with --db-map SRC=DST (import, verify)",
            redact(url),
            redact(url).trim_end_matches(db).trim_end_matches('/')
        ),
        _ => Ok(()),
    }
}

impl Endpoint {
    /// An endpoint from a URL alone.
    pub fn plain(url: &str) -> Endpoint {
        Endpoint {
            url: url.to_string(),
            password: None,
            token: None,
            tls: Arc::default(),
            read_timeout: crate::server::conn::READ_TIMEOUT,
        }
    }

    /// The same server, authenticating with `token` alone (`AUTH token`): how a connection
    /// enters a Kvrocks namespace (SERVERS.md: two-argument AUTH is rejected there).
    pub fn with_token(&self, token: String) -> Endpoint {
        Endpoint {
            token: Some(token),
            ..self.clone()
        }
    }

    /// The same server settings for another node at `addr` (`host:port`), e.g. a cluster node
    /// named in CLUSTER SLOTS or a MOVED reply: credentials, TLS and path kept.
    pub fn at(&self, addr: &str) -> Endpoint {
        let url = match self.url.split_once("://") {
            Some((scheme, rest)) => {
                let (cred, hostpath) = match rest.rsplit_once('@') {
                    Some((c, h)) => (format!("{c}@"), h),
                    None => (String::new(), rest),
                };
                let path = hostpath.find('/').map_or("", |i| &hostpath[i..]);
                format!("{scheme}://{cred}{addr}{path}")
            }
            None => addr.to_string(),
        };
        Endpoint { url, ..self.clone() }
    }

    /// True when a password comes with the URL, or from --password-env / --password-file.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
            || self
                .url
                .split_once("://")
                .and_then(|(_, rest)| rest.rsplit_once('@'))
                .is_some_and(|(cred, _)| cred.contains(':'))
    }

    /// How long a command may wait for its reply.
    pub fn read_timeout(&self) -> std::time::Duration {
        self.read_timeout
    }

    /// The URL without credentials: for messages, manifests and reports.
    pub fn name(&self) -> String {
        redact(&self.url)
    }

    /// A client for this server. A password in the URL wins over one from elsewhere.
    pub fn client(&self) -> anyhow::Result<redis::Client> {
        let name = self.name();
        let invalid = |e: redis::RedisError| anyhow!("{name}: {e}");
        let mut info = self.connection_info()?;
        let tls = &self.tls;
        let redis::ConnectionAddr::TcpTls { insecure, .. } = &mut info.addr else {
            return redis::Client::open(info).map_err(invalid);
        };
        *insecure |= tls.insecure;
        if tls.ca.is_none() && tls.client.is_none() {
            return redis::Client::open(info).map_err(invalid);
        }
        let certs = redis::TlsCertificates {
            client_tls: tls.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: tls.ca.clone(),
        };
        redis::Client::build_with_tls(info, certs)
            .map_err(|e| anyhow!("{name}: the TLS files are not usable (PEM certificates and key expected): {e}"))
    }

    /// Where and as whom to connect: the URL's, with the password from elsewhere or the
    /// namespace token.
    pub fn connection_info(&self) -> anyhow::Result<redis::ConnectionInfo> {
        let name = self.name();
        let invalid = |e: redis::RedisError| {
            // The error can quote the URL: say what is wrong without it.
            let detail = match e.detail() {
                Some(d) if !d.contains(self.url.as_str()) => format!(": {d}"),
                _ => String::new(),
            };
            let hint = if self.url.contains('@') {
                "; a password with @, :, / or % in it must be percent-encoded in the URL (@ as %40), or given with --password-env VAR or --password-file FILE"
            } else {
                ""
            };
            anyhow!("{name}: not a valid redis:// or rediss:// URL{detail}{hint}")
        };
        let mut info = self.url.as_str().into_connection_info().map_err(invalid)?;
        if info.redis.password.is_none() {
            info.redis.password.clone_from(&self.password);
        }
        if let Some(t) = &self.token {
            info.redis.password = Some(t.clone());
            info.redis.username = None;
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_name_hide_the_password() {
        let args = ConnectArgs {
            password_env: Some("KVFERRY_UNIT_TEST_PW".into()),
            ..ConnectArgs::default()
        };
        std::env::set_var("KVFERRY_UNIT_TEST_PW", "s3cret-env");
        let eps = args
            .endpoints(&["redis://u:s3cret-url@h:1".into(), "redis://h:2".into()])
            .unwrap();
        for e in &eps {
            assert!(!format!("{e:?} {}", e.name()).contains("s3cret"));
        }
        assert!(eps[1].client().is_ok());
        std::env::remove_var("KVFERRY_UNIT_TEST_PW");
        let err = args.endpoints(&[]).unwrap_err().to_string();
        assert_eq!(err, "--password-env KVFERRY_UNIT_TEST_PW: the variable is not set");
    }

    #[test]
    fn tls_files_must_be_pem() {
        let dir = tempfile::tempdir().unwrap();
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30u8, 0x82, 0x01]).unwrap();
        let args = ConnectArgs {
            tls_ca: Some(der),
            ..Default::default()
        };
        let err = args.endpoints(&["rediss://h:1".into()]).unwrap_err().to_string();
        assert!(err.contains("ca.der: holds no PEM certificate"), "{err}");
    }

    #[test]
    fn a_database_in_the_url_is_refused() {
        let args = ConnectArgs::default();
        let err = args
            .endpoints(&["redis://:pw@h:6379/5".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("redis://h:6379/5: kvferry does not take a database"),
            "{err}"
        );
        assert!(
            err.contains("give the server as redis://h:6379 ") && !err.contains("pw"),
            "{err}"
        );
        for ok in ["redis://h:6379", "redis://h:6379/", "rediss://u:p@h:1"] {
            assert!(args.endpoints(&[ok.into()]).is_ok(), "{ok}");
        }
    }

    #[test]
    fn another_node_keeps_credentials() {
        let e = Endpoint::plain("rediss://u:pw@h1:7000/0").at("10.0.0.2:7001");
        assert_eq!(e.url, "rediss://u:pw@10.0.0.2:7001/0");
        assert_eq!(Endpoint::plain("redis://h:1").at("h2:2").url, "redis://h2:2");
    }

    #[test]
    fn tls_options_need_a_rediss_url() {
        let args = ConnectArgs {
            tls_insecure: true,
            ..ConnectArgs::default()
        };
        let err = args.endpoints(&["redis://h:1".into()]).unwrap_err().to_string();
        assert!(err.contains("apply to rediss:// URLs"), "{err}");
    }
}
