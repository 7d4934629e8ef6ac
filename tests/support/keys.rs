//! Key material made by `openssl`, as an operator makes it: Ed25519 key pairs for JWTs, and a CA with a server
//! certificate for TLS.

use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<dir>/<name>.key` (private, PKCS#8 PEM) and `<dir>/<name>.pub` (public, PEM).
pub fn ed25519_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.pub"));
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        public.to_str().unwrap(),
    ]);
    (private, public)
}

/// A token signed with the private key file `key`, made by the `pageserver token` command.
pub fn token(key: &Path, scope: &str, tenant: Option<&str>, expires_in: Option<&str>) -> String {
    let mut cmd = Command::new(super::pageserver::binary());
    cmd.arg("token")
        .arg("--private-key")
        .arg(key)
        .arg("--scope")
        .arg(scope);
    if let Some(t) = tenant {
        cmd.arg("--tenant-id").arg(t);
    }
    if let Some(e) = expires_in {
        cmd.arg("--expires-in").arg(e);
    }
    let out = cmd.output().expect("run pageserver token");
    assert!(
        out.status.success(),
        "pageserver token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A CA (`<dir>/<name>-ca.crt`) and a server certificate it signed for `localhost` and 127.0.0.1
/// (`<dir>/<name>.crt`, key `<dir>/<name>.key`, mode 0600), all P-256.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn tls_files(dir: &Path, name: &str) -> TlsFiles {
    let p = |suffix: &str| {
        dir.join(format!("{name}{suffix}"))
            .to_str()
            .unwrap()
            .to_string()
    };
    let (ca_key, ca, key, csr, cert, ext) = (
        p("-ca.key"),
        p("-ca.crt"),
        p(".key"),
        p(".csr"),
        p(".crt"),
        p(".ext"),
    );
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";
    let run = |line: &str, subj: &str| {
        let mut args: Vec<&str> = line.split_whitespace().collect();
        args.extend(["-subj", subj]);
        openssl(&args);
    };
    run(
        &format!("req -x509 -nodes -days 2 {ec} -keyout {ca_key} -out {ca}"),
        &format!("/CN={name} test CA"),
    );
    run(
        &format!("req -nodes {ec} -keyout {key} -out {csr}"),
        "/CN=localhost",
    );
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let sign = format!(
        "x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 2 -extfile {ext} -out {cert}"
    );
    openssl(&sign.split_whitespace().collect::<Vec<_>>());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    TlsFiles {
        ca: ca.into(),
        cert: cert.into(),
        key: key.into(),
    }
}
