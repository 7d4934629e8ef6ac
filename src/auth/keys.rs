//! The validation keys and the decoding of tokens.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::{AuthError, Claims, KeyError};

/// A token longer than this is refused before any parsing (ours are a few hundred bytes).
pub const MAX_TOKEN_LEN: usize = 8192;

/// The public keys that tokens are checked against, reloadable from their path.
pub struct JwtAuth {
    path: PathBuf,
    keys: RwLock<Arc<Vec<DecodingKey>>>,
    validation: Validation,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("path", &self.path)
            .field("keys", &self.key_count())
            .finish()
    }
}

impl JwtAuth {
    /// Loads the keys of `path` (a PEM file, or a directory of them).
    pub fn load(path: &Path) -> Result<JwtAuth, KeyError> {
        let keys = read_keys(path)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Neon's tokens carry no `exp` and no `aud`: expiry is checked only when the token has one.
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        validation.leeway = 0;
        Ok(JwtAuth {
            path: path.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            validation,
        })
    }

    /// Reads the keys again from the same path; on error the old keys stay in force.
    pub fn reload(&self) -> Result<usize, KeyError> {
        let keys = read_keys(&self.path)?;
        let n = keys.len();
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(n)
    }

    pub fn key_count(&self) -> usize {
        self.current().len()
    }

    fn current(&self) -> Arc<Vec<DecodingKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The claims of `token` if one of the keys verifies it and it has not expired.
    pub fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing("the token is empty"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidToken(format!(
                "the token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        let mut last = None;
        for key in self.current().iter() {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                // Another key may verify it; a signature or format error is the same under each key.
                Err(e) => last = Some(e),
            }
        }
        Err(AuthError::InvalidToken(
            match last.as_ref().map(|e| e.kind()) {
                Some(ErrorKind::InvalidSignature) | None => {
                    "no validation key verifies the token's signature".into()
                }
                Some(ErrorKind::ExpiredSignature) => "the token has expired".into(),
                Some(ErrorKind::ImmatureSignature) => "the token is not valid yet (nbf)".into(),
                Some(ErrorKind::InvalidAlgorithm) => {
                    "only EdDSA (Ed25519) tokens are accepted".into()
                }
                Some(ErrorKind::Json(e)) => format!("the claims are not {{scope, tenant_id}}: {e}"),
                Some(ErrorKind::Base64(_))
                | Some(ErrorKind::Utf8(_))
                | Some(ErrorKind::InvalidToken) => {
                    "the token is not a JWT (three base64url parts)".into()
                }
                Some(_) => "the token cannot be verified".into(),
            },
        ))
    }
}

fn read_keys(path: &Path) -> Result<Vec<DecodingKey>, KeyError> {
    let read_err = |p: &Path| {
        let p = p.to_path_buf();
        move |source| KeyError::Read { path: p, source }
    };
    let meta = std::fs::metadata(path).map_err(read_err(path))?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(path).map_err(read_err(path))? {
            let entry = entry.map_err(read_err(path))?;
            // Regular files only, not recursive (as Neon): a `.hidden` editor backup would be read too, so
            // the operator keeps nothing but keys in the directory.
            if entry.file_type().map_err(read_err(path))?.is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut keys = Vec::with_capacity(files.len());
    for file in files {
        let pem = std::fs::read(&file).map_err(read_err(&file))?;
        let key = DecodingKey::from_ed_pem(&pem).map_err(|e| KeyError::BadKey {
            path: file.clone(),
            msg: e.to_string(),
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyError::NoKeys {
            path: path.to_path_buf(),
        });
    }
    Ok(keys)
}

/// Signs `claims` with an Ed25519 private key in PEM form (PKCS#8, as `openssl genpkey -algorithm ed25519`
/// writes it): the `pageserver token` command, and tests.
pub fn encode_token(private_pem: &[u8], claims: &Claims) -> Result<String, String> {
    let key = EncodingKey::from_ed_pem(private_pem)
        .map_err(|e| format!("not an Ed25519 private key in PEM form: {e}"))?;
    jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::Scope;
    use super::*;
    use crate::id::TenantId;

    /// Two Ed25519 key pairs made by `openssl genpkey -algorithm ed25519` (test data only).
    const PRIVATE_A: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIKqgw9/DlgAVnCZxUvKqGBHsd8gAzAsGnoS7RmxHgFGO
-----END PRIVATE KEY-----
";
    const PUBLIC_A: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAInCyIy0Vh0L5DEPLKIpPcYO8mYwot/pD3PYZjc7FElg=
-----END PUBLIC KEY-----
";
    const PRIVATE_B: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIBmUHmbH+9T6oDPmQGwednXwHGTAK0TD0Aqo83B/BoVL
-----END PRIVATE KEY-----
";
    const PUBLIC_B: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAobhtN8/UYYpQQrFZrPcOR/hhwuD/2k1vVm7HeXyc0hE=
-----END PUBLIC KEY-----
";

    fn claims(exp: Option<u64>) -> Claims {
        Claims {
            scope: Scope::Tenant,
            tenant_id: Some(TenantId([7; 16])),
            exp,
        }
    }

    fn auth_with(files: &[(&str, &str)]) -> (tempfile::TempDir, JwtAuth) {
        let dir = tempfile::tempdir().unwrap();
        for (name, body) in files {
            std::fs::write(dir.path().join(name), body).unwrap();
        }
        let auth = JwtAuth::load(dir.path()).unwrap();
        (dir, auth)
    }

    #[test]
    fn a_signed_token_decodes_and_others_do_not() {
        let (_dir, auth) = auth_with(&[("a.pem", PUBLIC_A)]);
        let token = encode_token(PRIVATE_A.as_bytes(), &claims(None)).unwrap();
        assert_eq!(auth.decode(&token).unwrap(), claims(None));

        let foreign = encode_token(PRIVATE_B.as_bytes(), &claims(None)).unwrap();
        let err = auth.decode(&foreign).unwrap_err().to_string();
        assert!(err.contains("no validation key"), "{err}");
        assert!(!err.contains(&foreign), "the token is not in the error");

        let expired = encode_token(PRIVATE_A.as_bytes(), &claims(Some(1_000_000))).unwrap();
        let err = auth.decode(&expired).unwrap_err().to_string();
        assert!(err.contains("expired"), "{err}");
        let far = u64::MAX / 4;
        assert!(
            auth.decode(&encode_token(PRIVATE_A.as_bytes(), &claims(Some(far))).unwrap())
                .is_ok()
        );

        for garbage in ["x", "a.b.c", "....", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(
                matches!(auth.decode(garbage), Err(AuthError::InvalidToken(_))),
                "{garbage:.20}"
            );
        }
        // A token of another algorithm (HS256 over the same claims) is refused by name.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(None),
            &EncodingKey::from_secret(PUBLIC_A.as_bytes()),
        )
        .unwrap();
        assert!(auth.decode(&hs).unwrap_err().to_string().contains("EdDSA"));
    }

    #[test]
    fn a_directory_of_keys_and_reload() {
        let (dir, auth) = auth_with(&[("a.pem", PUBLIC_A)]);
        let b_token = encode_token(PRIVATE_B.as_bytes(), &claims(None)).unwrap();
        assert!(auth.decode(&b_token).is_err());
        std::fs::write(dir.path().join("b.pem"), PUBLIC_B).unwrap();
        assert_eq!(auth.reload().unwrap(), 2);
        assert!(auth.decode(&b_token).is_ok());
        // A bad file makes the reload fail and the old keys stay.
        std::fs::write(dir.path().join("c.pem"), "not a key").unwrap();
        let err = auth.reload().unwrap_err().to_string();
        assert!(err.contains("c.pem"), "{err}");
        assert_eq!(auth.key_count(), 2);
        assert!(auth.decode(&b_token).is_ok());
        // An empty directory is an error.
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            JwtAuth::load(empty.path()),
            Err(KeyError::NoKeys { .. })
        ));
    }
}
