use super::*;
use crate::audit::Status;
use crate::audit::evidence::testing as ev;
use crate::harden::{HardenOptions, HostFacts};

const CONF: &str = "/etc/freeswitch";

/// A certificate and key made here, as PEM (cert, key).
fn made(names: &[&str]) -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn material(cert: &str, key: &str) -> Material {
    Material::from_pem(
        "pbx1",
        Path::new("/inv/cert.pem"),
        cert.as_bytes().to_vec(),
        Path::new("/inv/key.pem"),
        Secret::new(key),
    )
    .unwrap()
}

fn facts(files: &[(String, String)]) -> HostFacts {
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    HostFacts::with_conf(CONF, &refs)
}

fn plan_on(f: &HostFacts, m: &Material) -> Result<Plan<Option<Verify>>, StepError> {
    let host = crate::harden::context::test_host("pbx1");
    let opts = HardenOptions::default();
    let pre = crate::harden::preflight::Preflight::from_config(f).unwrap();
    plan_with(
        &PlanInput {
            facts: f,
            host: &host,
            opts: &opts,
            pre: &pre,
            before: &[],
        },
        m,
    )
}

/// The tree once the plan's vars.xml edit is written (relative paths).
fn after(files: &[(String, String)], p: &StepPlan) -> Vec<(String, String)> {
    let mut out = files.to_vec();
    for e in &p.edits {
        let rel = e.path.trim_start_matches("/etc/freeswitch/");
        if let Some(slot) = out.iter_mut().find(|(r, _)| r == rel) {
            slot.1 = String::from_utf8(e.new.clone()).unwrap();
        }
    }
    out
}

fn vars_of(files: &[(String, String)]) -> &str {
    &files.iter().find(|(r, _)| r == "vars.xml").unwrap().1
}

#[test]
fn certs_dir_follows_the_layout() {
    assert_eq!(certs_dir("/etc/freeswitch"), "/etc/freeswitch/tls");
    assert_eq!(
        certs_dir("/usr/local/freeswitch/conf"),
        "/usr/local/freeswitch/certs"
    );
    assert_eq!(
        certs_dir("/usr/local/freeswitch/etc/freeswitch"),
        "/usr/local/freeswitch/etc/freeswitch/tls"
    );
}

#[test]
fn on_the_stock_tree_tls_goes_on_with_the_certificate_then_nothing() {
    let files = ev::stock_files();
    let (cert, key) = made(&["pbx1", "192.0.2.10"]);
    let m = material(&cert, &key);
    let f = facts(&files);
    let p = plan_on(&f, &m).unwrap();
    let fp = fingerprint_hex(&m.fingerprint);
    // vars.xml: exactly the three values change, every other line stays.
    let done = after(&files, &p);
    let (old, new) = (vars_of(&files), vars_of(&done));
    let changed: Vec<(&str, &str)> = old
        .lines()
        .zip(new.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(old.lines().count(), new.lines().count());
    assert_eq!(
        changed.iter().map(|(_, b)| b.trim()).collect::<Vec<_>>(),
        [
            "<X-PRE-PROCESS cmd=\"set\" data=\"sip_tls_version=tlsv1.2\"/>",
            "<X-PRE-PROCESS cmd=\"set\" data=\"internal_ssl_enable=true\"/>",
            "<X-PRE-PROCESS cmd=\"set\" data=\"external_ssl_enable=true\"/>",
        ]
    );
    // The files: agent.pem (chain + key) FreeSWITCH's and 0600, cafile.pem the chain.
    let agent = p
        .edits
        .iter()
        .find(|e| e.path == "/etc/freeswitch/tls/agent.pem")
        .unwrap();
    assert!(agent.created);
    assert_eq!(
        (
            agent.want.user.as_str(),
            agent.want.group.as_str(),
            agent.want.mode
        ),
        ("freeswitch", "freeswitch", 0o600)
    );
    assert_eq!(agent.new, format!("{cert}{key}").into_bytes());
    let ca = p
        .edits
        .iter()
        .find(|e| e.path == "/etc/freeswitch/tls/cafile.pem")
        .unwrap();
    assert_eq!(ca.new, cert.as_bytes());
    assert_eq!(ca.want.mode, 0o644);
    assert!(
        p.changes.iter().any(|c| c.contains(&fp)),
        "the plan names the certificate by its fingerprint: {:?}",
        p.changes
    );
    // Every profile that serves TLS afterwards restarts (a rescan binds no TLS port).
    let mut restart = p.reload.restart.clone();
    restart.sort();
    assert_eq!(
        restart,
        ["external", "external-ipv6", "internal", "internal-ipv6"]
    );
    assert!(p.reload.reloadxml);
    let v = p.action.clone().unwrap();
    assert_eq!(v.ports, [5061, 5081]);
    assert_eq!(v.fingerprint, m.fingerprint);
    // FS-SIP-07 reads the same files and passes; before, it failed.
    assert_eq!(
        ev::eval("FS-SIP-07", &ev::evidence(&files, &[], Default::default())).status,
        Status::Fail
    );
    let audit = ev::eval("FS-SIP-07", &ev::evidence(&done, &[], Default::default()));
    assert_eq!(audit.status, Status::Pass, "{:?}", audit.evidence);
    assert!(
        audit.evidence[0].starts_with("TLS is on for: ")
            && audit.evidence[0].contains("internal (port 5061/tcp)")
            && audit.evidence[0].contains("external (port 5081/tcp)"),
        "{:?}",
        audit.evidence
    );
    // A second run with the same certificate plans nothing.
    let f2 = facts(&files).with_edits(p.edits.iter());
    let again = plan_on(&f2, &m).unwrap();
    assert!(
        again.is_noop() && again.edits.is_empty() && !again.reload.any(),
        "{:?}",
        again.changes
    );
    assert!(again.action.is_none());
}

#[test]
fn a_new_certificate_replaces_the_files_and_restarts_only_the_tls_profiles() {
    let files = ev::stock_files();
    let (c1, k1) = made(&["old"]);
    let first = plan_on(&facts(&files), &material(&c1, &k1)).unwrap();
    let done = after(&files, &first);
    let f = facts(&done).with_edits(first.edits.iter().filter(|e| e.path.contains("/tls/")));
    let (c2, k2) = made(&["new"]);
    let m2 = material(&c2, &k2);
    let p = plan_on(&f, &m2).unwrap();
    assert!(
        p.edits
            .iter()
            .all(|e| e.path.contains("/tls/") && !e.created)
    );
    assert_eq!(p.edits.len(), 2);
    assert_eq!(p.reload.restart.len(), 4);
    // The diff says what the file held and holds, by fingerprint; no byte of either key.
    let d = p.diffs.join("\n");
    let old_fp = fingerprint_hex(&material(&c1, &k1).fingerprint);
    assert!(
        d.contains(&old_fp) && d.contains(&fingerprint_hex(&m2.fingerprint)),
        "{d}"
    );
    assert!(d.contains("private key (not shown)"), "{d}");
    for k in [&k1, &k2] {
        for line in k.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!d.contains(line), "key material in the diff");
        }
    }
}

#[test]
fn operator_values_are_kept_crlf_too_and_missing_variables_are_named() {
    let mut files = ev::stock_files();
    ev::edit(&mut files, "vars.xml", |t| {
        t.replace("internal_ssl_enable=false", "internal_ssl_enable=yes")
            .replace(
                "  <X-PRE-PROCESS cmd=\"set\" data=\"external_ssl_enable=false\"/>\n",
                "",
            )
            .replace('\n', "\r\n")
    });
    let (cert, key) = made(&["pbx1"]);
    let p = plan_on(&facts(&files), &material(&cert, &key)).unwrap();
    let done = after(&files, &p);
    let new = vars_of(&done);
    assert!(
        new.contains("internal_ssl_enable=yes\"/>\r\n"),
        "kept as written"
    );
    assert!(new.contains("sip_tls_version=tlsv1.2\"/>\r\n"));
    assert_eq!(
        new.len(),
        vars_of(&files).len() + "tlsv1.2".len() - "tlsv1,tlsv1.1,tlsv1.2".len()
    );
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("does not set external_ssl_enable")),
        "{:?}",
        p.warnings
    );
    // internal stays on (yes), external has no variable: only the internal profiles serve.
    let mut restart = p.reload.restart.clone();
    restart.sort();
    assert_eq!(restart, ["internal", "internal-ipv6"]);
    assert_eq!(p.action.unwrap().ports, [5061]);
}

#[test]
fn no_profile_that_can_serve_tls_is_refused_by_name() {
    let mut files = ev::stock_files();
    for rel in [
        "sip_profiles/internal.xml",
        "sip_profiles/external.xml",
        "sip_profiles/internal-ipv6.xml",
        "sip_profiles/external-ipv6.xml",
    ] {
        ev::edit(&mut files, rel, |t| {
            t.replace("value=\"$${internal_ssl_enable}\"", "value=\"false\"")
                .replace("value=\"$${external_ssl_enable}\"", "value=\"false\"")
        });
    }
    let (cert, key) = made(&["pbx1"]);
    let e = plan_on(&facts(&files), &material(&cert, &key)).unwrap_err();
    assert!(
        e.to_string().starts_with("no SIP profile would serve TLS"),
        "{e}"
    );
}

#[test]
fn the_default_password_is_masked_in_the_vars_diff_and_nothing_shows_the_key() {
    let mut files = ev::stock_files();
    // Put default_password next to the edited lines so it would be diff context.
    ev::edit(&mut files, "vars.xml", |t| {
        t.replace(
            "  <X-PRE-PROCESS cmd=\"set\" data=\"internal_ssl_enable=false\"/>\n",
            "  <X-PRE-PROCESS cmd=\"set\" data=\"internal_ssl_enable=false\"/>\n  <X-PRE-PROCESS cmd=\"set\" data=\"default_password=Sup3rSecretPw\"/>\n",
        )
    });
    let (cert, key) = made(&["pbx1"]);
    let m = material(&cert, &key);
    let p = plan_on(&facts(&files), &m).unwrap();
    let shown = format!(
        "{}\n{}\n{}\n{:?}\n{:?}\n{:?}",
        p.changes.join("\n"),
        p.diffs.join("\n"),
        p.warnings.join("\n"),
        p.outline,
        p.action,
        m
    );
    assert!(!shown.contains("Sup3rSecretPw"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY-----\n"), "{shown}");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "key material shown");
    }
}

#[test]
fn pem_problems_name_the_file_and_the_host() {
    let d = tempfile::tempdir().unwrap();
    let (cert, key) = made(&["pbx1"]);
    let (_, other_key) = made(&["other"]);
    let w = |name: &str, text: &str| {
        let p = d.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (c, k, k2) = (w("c.pem", &cert), w("k.pem", &key), w("k2.pem", &other_key));
    let garbage = w("g.pem", "hello\n");
    let bad_b64 = w(
        "b.pem",
        "-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----\n",
    );
    let not_x509 = w(
        "x.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    assert!(Material::load("pbx1", &c, &k).is_ok());
    let msg = |c: &Path, k: &Path| Material::load("pbx1", c, k).unwrap_err().to_string();
    let m = msg(&c, &k2);
    assert!(
        m.starts_with("host pbx1: the private key ")
            && m.contains("k2.pem")
            && m.contains("is not the key of the certificate"),
        "{m}"
    );
    let m = msg(&garbage, &k);
    assert!(m.contains("g.pem holds no PEM certificate"), "{m}");
    let m = msg(&bad_b64, &k);
    assert!(m.contains("b.pem is not valid PEM"), "{m}");
    let m = msg(&not_x509, &k);
    assert!(m.contains("x.pem is not a valid X.509 certificate"), "{m}");
    let m = msg(&c, &c);
    assert!(m.contains("c.pem holds no usable private key"), "{m}");
    let m = msg(&d.path().join("missing.pem"), &k);
    assert!(
        m.starts_with("host pbx1: cannot read tls_cert ") && m.contains("missing.pem"),
        "{m}"
    );
    // An unreadable key file's error never quotes it.
    let m = msg(&c, &garbage);
    assert!(!m.contains("hello"), "{m}");
}

#[test]
fn half_a_configuration_is_refused_and_none_skips_with_a_reason() {
    let f = facts(&ev::stock_files());
    let mut host = crate::harden::context::test_host("pbx1");
    let opts = HardenOptions::default();
    let pre = crate::harden::preflight::Preflight::from_config(&f).unwrap();
    let run = |host: &Host| {
        plan(&PlanInput {
            facts: &f,
            host,
            opts: &opts,
            pre: &pre,
            before: &[],
        })
    };
    let skipped = run(&host).unwrap();
    assert!(skipped.is_noop() && skipped.action.is_none());
    assert!(skipped.warnings[0].starts_with("skipped: no certificate"));
    host.tls_cert = Some("/inv/cert.pem".into());
    let e = run(&host).unwrap_err().to_string();
    assert_eq!(
        e,
        "host pbx1: tls_cert and tls_key go together: tls_key is not set"
    );
}

#[test]
fn self_signed_is_made_once_kept_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let host = crate::harden::context::test_host("pbx1");
    let a = Material::self_signed(&host, d.path()).unwrap();
    let b = Material::self_signed(&host, d.path()).unwrap();
    assert_eq!(a.fingerprint, b.fingerprint);
    let key = d.path().join("pbx1/key.pem");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(d.path().join("pbx1"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let mut odd = host.clone();
    odd.name = "../x".into();
    assert!(Material::self_signed(&odd, d.path()).is_err());
}

#[tokio::test]
async fn the_handshake_shows_the_servers_certificate() {
    let (cert, key) = made(&["localhost"]);
    let m = material(&cert, &key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let k = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, k)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let a = acceptor.clone();
            tokio::spawn(async move {
                let _ = a.accept(s).await;
            });
        }
    });
    let served = handshake("127.0.0.1", port, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(served.fingerprint, m.fingerprint);
    assert_eq!(served.version, "TLSv1_2");
    let ok = verify(&Verify {
        address: "127.0.0.1".into(),
        ports: vec![port],
        fingerprint: m.fingerprint,
    })
    .await
    .unwrap();
    assert!(ok[0].contains(&fingerprint_hex(&m.fingerprint)), "{ok:?}");
    // Nothing listening: the error names the target.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = handshake("127.0.0.1", closed, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("connecting to 127.0.0.1:{closed}")),
        "{e}"
    );
}

#[test]
fn a_profile_with_its_own_cert_dir_is_refused_by_name() {
    let mut files = ev::stock_files();
    ev::edit(&mut files, "sip_profiles/internal.xml", |t| {
        t.replace(
            "<!--<param name=\"tls-cert-dir\" value=\"\"/>-->",
            "<param name=\"tls-cert-dir\" value=\"/srv/certs\"/>",
        )
    });
    let (cert, key) = made(&["pbx1"]);
    let e = plan_on(&facts(&files), &material(&cert, &key))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("profile(s) internal (tls-cert-dir /srv/certs) read their certificate"),
        "{e}"
    );
    // The certs dir itself, named explicitly, is fine.
    ev::edit(&mut files, "sip_profiles/internal.xml", |t| {
        t.replace("/srv/certs", "/etc/freeswitch/tls/")
    });
    assert!(plan_on(&facts(&files), &material(&cert, &key)).is_ok());
}

/// `ss` listing lines for the given TCP ports, as the listeners fact reads them.
fn listening(ports: &[u16]) -> crate::facts::Sections {
    let text: String = ports
        .iter()
        .map(|p| format!("LISTEN 0      128    192.0.2.10:{p}  0.0.0.0:* uid:999 ino:1 sk:1 <->\n"))
        .collect();
    crate::facts::Sections::from_pairs(&[(crate::facts::LISTEN, &text, 0)])
}

#[test]
fn tls_on_in_the_files_but_not_served_restarts_only_those_profiles() {
    let files = ev::stock_files();
    let (cert, key) = made(&["pbx1"]);
    let m = material(&cert, &key);
    let first = plan_on(&facts(&files), &m).unwrap();
    // A run cut after the write, before the reload: the files are right, 5061 is not served.
    let mut f = facts(&files).with_edits(first.edits.iter());
    f.sections = listening(&[5060, 5080, 5081]);
    let p = plan_on(&f, &m).unwrap();
    assert!(p.edits.is_empty(), "{:?}", p.changes);
    let mut restart = p.reload.restart.clone();
    restart.sort();
    assert_eq!(restart, ["internal", "internal-ipv6"]);
    assert!(
        p.changes[0].contains("FreeSWITCH does not serve it"),
        "{:?}",
        p.changes
    );
    assert!(p.action.is_some());
    // Both TLS ports served: nothing to do.
    f.sections = listening(&[5060, 5061, 5080, 5081]);
    let p = plan_on(&f, &m).unwrap();
    assert!(p.is_noop() && !p.reload.any());
}
