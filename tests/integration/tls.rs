//! HTTPS from the real binary (`serve --tls-cert --tls-key`): a test CA and
//! leaves made here (rcgen; an RSA key from openssl), requests verified
//! against that CA over TLS 1.2 and 1.3, and renewals served after SIGHUP
//! and after the files change, without dropping an open connection; a
//! renewal that cannot be read keeps the working pair.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::util::ServedBinary;

/// A certificate authority made for one test.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "rollcall test CA");
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    /// A leaf for 127.0.0.1 with `key` (a fresh ECDSA P-256 key if none):
    /// (chain PEM, key PEM, leaf DER).
    fn leaf(&self, name: &str, key: Option<KeyPair>) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.distinguished_name.push(DnType::CommonName, name);
        let key = key.unwrap_or_else(|| KeyPair::generate().unwrap());
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        // The chain as a CA hands it out: the leaf, then the issuer.
        (format!("{}{}", leaf.pem(), self.pem), key.serialize_pem(), leaf.der().to_vec())
    }
}

/// Sends SIGHUP to the server.
fn hang_up(server: &ServedBinary) {
    let sent =
        std::process::Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status();
    assert!(sent.unwrap().success());
}

fn start(dir: &Path, cert: &Path, key: &Path) -> ServedBinary {
    let args =
        [OsStr::new("--tls-cert"), cert.as_os_str(), OsStr::new("--tls-key"), key.as_os_str()];
    let server = ServedBinary::start(&dir.join("tls.db"), &args);
    assert_eq!(server.scheme, "https");
    server
}

fn client(ca: &TestCa, version: Option<reqwest::tls::Version>) -> reqwest::Client {
    rollcall::webhooks::deliver::install_tls_provider();
    let root = reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder().tls_certs_only([root]).tls_info(true);
    if let Some(version) = version {
        builder = builder.tls_version_min(version).tls_version_max(version);
    }
    builder.build().unwrap()
}

/// `GET /healthz` over HTTPS: the leaf the server presented.
async fn served_leaf(client: &reqwest::Client, address: &str) -> Vec<u8> {
    let response = client.get(format!("https://{address}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let info = response.extensions().get::<reqwest::tls::TlsInfo>().cloned();
    info.and_then(|info| info.peer_certificate().map(<[u8]>::to_vec)).expect("a peer certificate")
}

fn write(path: &PathBuf, text: &str) {
    // Replaced in one rename, as certbot and cert-manager do.
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_reloaded_certificate_and_tls_1_2_and_1_3() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ca = TestCa::new();
    let (chain, private, first) = ca.leaf("first", None);
    write(&cert, &chain);
    write(&key, &private);
    let db = dir.path().join("tls.db");
    crate::util::rollcall_ok(&db, &["tenant", "create", "acme"]);
    let issued =
        crate::util::rollcall_ok(&db, &["token", "issue", "--tenant", "acme", "--scope", "scim"]);
    let token = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let server = start(dir.path(), &cert, &key);

    // Verified against the test CA, in both protocol versions.
    for version in [reqwest::tls::Version::TLS_1_2, reqwest::tls::Version::TLS_1_3] {
        assert_eq!(served_leaf(&client(&ca, Some(version)), &server.address).await, first);
    }
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new().get(format!("http://{}/healthz", server.address)).send();
    assert!(plain.await.is_err());
    // The SCIM base URL says https.
    let kept = client(&ca, None);
    let config: serde_json::Value = kept
        .get(format!("https://{}/scim/v2/ServiceProviderConfig", server.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let location = config["meta"]["location"].as_str().unwrap_or_default();
    assert!(location.starts_with("https://"), "{config}");
    assert_eq!(served_leaf(&kept, &server.address).await, first);

    // Renewed in place, then SIGHUP: new connections get the new leaf; the
    // connection already open answers its next request (on its session).
    let (chain, private, second) = ca.leaf("second", None);
    write(&cert, &chain);
    write(&key, &private);
    hang_up(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_leaf(&client(&ca, None), &server.address).await != second {
        assert!(Instant::now() < deadline, "the renewed certificate was not served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_leaf(&kept, &server.address).await, first, "the open connection was kept");

    // Renewed without a signal: seen when the files change. An RSA key
    // this time (made by openssl: ring makes no RSA keys).
    let rsa = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .unwrap();
    assert!(rsa.status.success());
    let rsa = KeyPair::from_pem(std::str::from_utf8(&rsa.stdout).unwrap()).unwrap();
    let (chain, private, third) = ca.leaf("third", Some(rsa));
    write(&key, &private);
    write(&cert, &chain);
    let deadline = Instant::now() + Duration::from_secs(15);
    while served_leaf(&client(&ca, None), &server.address).await != third {
        assert!(Instant::now() < deadline, "the changed files were not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A renewal that is broken (the key of another certificate) is refused
    // and logged; the working pair is still served.
    let failures = server.logged("TLS certificate reload failed");
    let (chain, _, _) = ca.leaf("fourth", None);
    write(&cert, &chain);
    hang_up(&server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.logged("TLS certificate reload failed") == failures {
        assert!(Instant::now() < deadline, "no reload failure logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.logged("is not the key of the certificate") > 0);
    assert_eq!(served_leaf(&client(&ca, None), &server.address).await, third);
}

#[test]
fn a_certificate_that_cannot_be_served_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("ROLLCALL_DB", dir.path().join("tls.db"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(said.contains("no certificate"), "{said}");
    // One flag without the other is refused before anything starts.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .env("ROLLCALL_DB", dir.path().join("tls.db"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-key"));
}
