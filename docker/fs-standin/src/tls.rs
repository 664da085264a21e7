//! SIP over TLS, as FreeSWITCH 1.10's mod_sofia serves it.
//!
//! Real behaviour reproduced (signalwire/freeswitch, src/mod/endpoints/mod_sofia/sofia.c
//! `config_sofia`, and switch_core.c `switch_core_init`):
//! - the core creates its certs dir (`$${certs_dir}`: `CONF/tls` for packages, `BASE/certs`
//!   for a source build) at startup;
//! - a profile with `tls` true serves SIP over TLS on `tls-sip-port` (5061 unless set), on its
//!   `sip-ip`, besides UDP and TCP on `sip-port`;
//! - its certificate and key come from `tls-cert-dir`, else the certs dir: `agent.pem` (the
//!   certificate and its key in one file) when both `agent.pem` and `cafile.pem` exist there;
//!   otherwise from `tls.pem`, which FreeSWITCH generates (self-signed) when it is missing;
//! - the TLS transport is bound, and the certificate read, only when the profile starts: a
//!   `sofia profile NAME rescan` changes neither, `sofia profile NAME restart` does both (and
//!   answers `restarting: NAME` before the profile is back).
//!
//! Not reproduced: a restart here rebinds only the TLS listener (UDP and TCP keep running, with
//! the settings a rescan gives them), and sofia's "must be up for at least 10 seconds" refusal.
//! rustls speaks no TLS 1.0/1.1, so the listener serves TLS 1.2 whatever `tls-version` allows.

use crate::config::ProfileConf;
use crate::core::Core;
use crate::logfile::Level;
use crate::sip::{Registrar, SharedRegistrar};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Restart requests from the api (`sofia profile NAME restart`), for the task started by
/// [`start`]; and the TLS listener task of each profile.
static RESTARTS: OnceLock<mpsc::UnboundedSender<String>> = OnceLock::new();
static LISTENERS: OnceLock<Mutex<HashMap<String, JoinHandle<()>>>> = OnceLock::new();

fn listeners() -> std::sync::MutexGuard<'static, HashMap<String, JoinHandle<()>>> {
    LISTENERS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The certs dir FreeSWITCH reads `agent.pem` from for this profile.
fn cert_dir(core: &Core, p: &ProfileConf) -> Option<PathBuf> {
    p.tls_cert_dir
        .clone()
        .or_else(|| core.global_var("certs_dir"))
        .map(PathBuf::from)
}

/// At startup: make the certs dir (as switch_core_init does, with SWITCH_DEFAULT_DIR_PERMS:
/// 0750) and take profile restart
/// requests from now on.
pub fn start(core: &Arc<Core>) {
    if let Some(dir) = core.global_var("certs_dir") {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    if RESTARTS.set(tx).is_err() {
        return;
    }
    let core = core.clone();
    tokio::spawn(async move {
        while let Some(name) = rx.recv().await {
            // mod_sofia re-reads the profile's XML as it starts it again.
            core.rescan(&name);
            let snap = core.snapshot();
            if let Some(p) = snap.profiles.iter().find(|p| p.name == name) {
                start_profile(&core, p).await;
            }
            core.log.log(
                Level::Notice,
                "sofia.c:3393",
                &format!("Started Profile {name} [sofia_reg_{name}]"),
            );
        }
    });
}

/// `sofia profile NAME restart` of a running profile: the reply, the restart itself later.
pub fn request_restart(name: &str) -> String {
    match RESTARTS.get() {
        Some(tx) if tx.send(name.to_string()).is_ok() => format!("restarting: {name}"),
        _ => "-ERR profile restarts are not available\n".to_string(),
    }
}

/// Bind the profile's TLS port when its `tls` is true (replacing a listener it had).
pub async fn start_profile(core: &Arc<Core>, p: &ProfileConf) {
    let old = listeners().remove(&p.name);
    if let Some(old) = old {
        old.abort();
        // The aborted task drops its socket when it is next polled.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !p.tls {
        return;
    }
    let Ok(ip) = p.sip_ip.parse::<IpAddr>() else {
        return;
    };
    let Some(dir) = cert_dir(core, p) else {
        return;
    };
    let config = match server_config(core, &dir) {
        Ok(c) => c,
        Err(e) => {
            core.log.log(
                Level::Error,
                "sofia.c:3299",
                &format!("Profile {}: TLS not started: {e}", p.name),
            );
            return;
        }
    };
    let mut bound = None;
    for _ in 0..40 {
        match tokio::net::TcpListener::bind((ip, p.tls_sip_port)).await {
            Ok(l) => {
                bound = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let Some(listener) = bound else {
        core.log.log(
            Level::Error,
            "sofia.c:3299",
            &format!(
                "Error Creating SIP UA for profile: {} (sips:mod_sofia@{ip}:{};transport=tls) The likely causes for this are: 1) Another application is already listening on the specified address. 2) The IP the profile is attempting to bind to is not local to this system.",
                p.name, p.tls_sip_port
            ),
        );
        return;
    };
    let reg: SharedRegistrar = Arc::new(Mutex::new(Registrar::new(core.clone(), p)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (acceptor, reg) = (acceptor.clone(), reg.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                else {
                    return;
                };
                let _ = crate::sip::sip_tcp_connection(tls, peer, reg).await;
            });
        }
    });
    listeners().insert(p.name.clone(), task);
}

/// The certificate and key sofia would load from `dir`.
fn server_config(core: &Core, dir: &Path) -> Result<rustls::ServerConfig, String> {
    let (agent, ca) = (dir.join("agent.pem"), dir.join("cafile.pem"));
    let file = if agent.is_file() && ca.is_file() {
        agent
    } else {
        let tls = dir.join("tls.pem");
        if !tls.exists() {
            generate(&tls)?;
            core.log.log(
                Level::Info,
                "switch_core_cert.c:324",
                &format!("Generated certificate {}", tls.display()),
            );
        }
        tls
    };
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|_| format!("{}: no private key", file.display()))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// switch_core_gen_certs: a self-signed certificate and its key in one file.
fn generate(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let c = rcgen::generate_simple_self_signed(vec![crate::netinfo::hostname()])
        .map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(format!("{}{}", c.cert.pem(), c.signing_key.serialize_pem()).as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn made() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["pbx".to_string()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec()
    }

    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// A tree with vars, the directory and the internal profile serving TLS on `port` with the
    /// certificates of `certs`.
    fn tree(dir: &Path, certs: &Path, tls: bool, port: u16) {
        let stock = crate::config::find_stock_tree(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        std::fs::copy(stock.join("vars.xml"), dir.join("vars.xml")).unwrap();
        std::fs::create_dir_all(dir.join("directory/default")).unwrap();
        std::fs::copy(
            stock.join("directory/default.xml"),
            dir.join("directory/default.xml"),
        )
        .unwrap();
        std::fs::copy(
            stock.join("directory/default/1000.xml"),
            dir.join("directory/default/1000.xml"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("autoload_configs")).unwrap();
        let esl = "autoload_configs/event_socket.conf.xml";
        std::fs::copy(stock.join(esl), dir.join(esl)).unwrap();
        std::fs::create_dir_all(dir.join("sip_profiles")).unwrap();
        let internal = std::fs::read_to_string(stock.join("sip_profiles/internal.xml"))
            .unwrap()
            .replace(
                "$${internal_ssl_enable}",
                if tls { "true" } else { "false" },
            )
            .replace("$${internal_tls_port}", &port.to_string())
            .replace(
                "<!--<param name=\"tls-cert-dir\" value=\"\"/>-->",
                &format!(
                    "<param name=\"tls-cert-dir\" value=\"{}\"/>",
                    certs.display()
                ),
            );
        std::fs::write(dir.join("sip_profiles/internal.xml"), internal).unwrap();
    }

    #[derive(Debug)]
    struct Any;
    impl rustls::client::danger::ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// Connect over TLS; the served certificate (DER) and the reply to `request`.
    async fn exchange(port: u16, request: &str) -> std::io::Result<(Vec<u8>, String)> {
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any))
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await?;
        let served = tls.get_ref().1.peer_certificates().unwrap()[0]
            .as_ref()
            .to_vec();
        tls.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("no reply"))??;
        Ok((served, String::from_utf8_lossy(&buf[..n]).to_string()))
    }

    fn request(method: &str) -> String {
        format!(
            "{method} sip:1000@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bKtls1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1000@127.0.0.1>;tag=t1\r\n\
             To: <sip:1000@127.0.0.1>\r\nCall-ID: tls-{method}@127.0.0.1\r\n\
             CSeq: 1 {method}\r\nContact: <sip:1000@127.0.0.1:5099;transport=tls>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    }

    #[tokio::test]
    async fn a_tls_profile_serves_agent_pem_and_sip_and_restart_reloads_it() {
        let conf = tempfile::tempdir().unwrap();
        let certs = tempfile::tempdir().unwrap();
        let port = free_port();
        tree(conf.path(), certs.path(), true, port);
        let (cert, key) = made();
        std::fs::write(certs.path().join("agent.pem"), format!("{cert}{key}")).unwrap();
        std::fs::write(certs.path().join("cafile.pem"), &cert).unwrap();
        let core = crate::core::test_core(conf.path(), conf.path());
        let p = core.snapshot().profiles[0].clone();
        assert!(p.tls && p.tls_sip_port == port);
        start_profile(&core, &p).await;
        let (served, reply) = exchange(port, &request("OPTIONS")).await.unwrap();
        assert_eq!(served, der_of(&cert));
        assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
        let (_, reply) = exchange(port, &request("REGISTER")).await.unwrap();
        assert!(reply.starts_with("SIP/2.0 401 Unauthorized\r\n"), "{reply}");
        assert!(reply.contains("WWW-Authenticate: Digest"), "{reply}");
        // A new certificate on disk: served only once the profile starts again.
        let (cert2, key2) = made();
        std::fs::write(certs.path().join("agent.pem"), format!("{cert2}{key2}")).unwrap();
        let (served, _) = exchange(port, &request("OPTIONS")).await.unwrap();
        assert_eq!(served, der_of(&cert));
        start_profile(&core, &p).await;
        let (served, _) = exchange(port, &request("OPTIONS")).await.unwrap();
        assert_eq!(served, der_of(&cert2));
        // TLS off: the restarted profile binds no TLS port.
        let off = ProfileConf { tls: false, ..p };
        start_profile(&core, &off).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(exchange(port, &request("OPTIONS")).await.is_err());
    }

    #[tokio::test]
    async fn without_cafile_sofia_serves_a_generated_tls_pem() {
        let conf = tempfile::tempdir().unwrap();
        let certs = tempfile::tempdir().unwrap();
        let port = free_port();
        tree(conf.path(), certs.path(), true, port);
        let (cert, key) = made();
        std::fs::write(certs.path().join("agent.pem"), format!("{cert}{key}")).unwrap();
        let core = crate::core::test_core(conf.path(), conf.path());
        let p = core.snapshot().profiles[0].clone();
        start_profile(&core, &p).await;
        let (served, _) = exchange(port, &request("OPTIONS")).await.unwrap();
        let generated = std::fs::read_to_string(certs.path().join("tls.pem")).unwrap();
        assert!(generated.contains("PRIVATE KEY"));
        assert_eq!(served, der_of(&generated));
        assert_ne!(served, der_of(&cert));
        // With cafile.pem too, a broken agent.pem is refused, never half-loaded.
        std::fs::write(certs.path().join("cafile.pem"), &cert).unwrap();
        std::fs::write(certs.path().join("agent.pem"), &cert).unwrap();
        let e = server_config(&core, certs.path()).unwrap_err();
        assert!(e.contains("agent.pem: no private key"), "{e}");
    }
}
