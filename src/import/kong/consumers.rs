//! Kong consumers and their credentials: key-auth keys into the keys file
//! (hashes only), JWT secrets and public keys into one provider each.

use super::*;

/// What `secret_file` needs for an HS* provider.
const MIN_HMAC_SECRET: usize = 32;
/// Below this, a key carried over is reported as guessable from its hash.
const MIN_OPAQUE_KEY: usize = 20;

impl Kong<'_> {
    pub(super) fn consumer(&mut self, path: &str, o: &Map<String, Value>) {
        let Some(name) = consumer_name(o) else {
            self.not(path, "a consumer needs a username or custom_id");
            return;
        };
        for (i, p) in list(o, "plugins").iter().enumerate() {
            if let Some(p) = obj(p) {
                self.plugin(
                    &format!("{path}.plugins[{i}]"),
                    p,
                    None,
                    None,
                    Some(name.clone()),
                );
            }
        }
        let groups: Vec<String> = list(o, "acls")
            .iter()
            .filter_map(|a| obj(a).and_then(|a| text(a, "group")))
            .collect();
        for (i, cred) in list(o, "keyauth_credentials").iter().enumerate() {
            let cp = format!("{path}.keyauth_credentials[{i}]");
            let Some(cred) = obj(cred) else { continue };
            self.api_key(&cp, cred, &name, &groups);
        }
        for (i, secret) in list(o, "jwt_secrets").iter().enumerate() {
            let sp = format!("{path}.jwt_secrets[{i}]");
            let Some(secret) = obj(secret) else { continue };
            self.jwt_secret(&sp, secret, &name);
        }
        self.rest(
            path,
            o,
            &[
                "username",
                "custom_id",
                "id",
                "acls",
                "keyauth_credentials",
                "jwt_secrets",
                "plugins",
                "tags",
                "created_at",
                "updated_at",
            ],
            &[],
        );
    }

    /// One `[[keys]]` entry: the hash of Kong's key, never the key.
    pub(super) fn api_key(
        &mut self,
        path: &str,
        cred: &Map<String, Value>,
        consumer: &str,
        groups: &[String],
    ) {
        let Some(key) = text(cred, "key") else {
            self.not(
                path,
                "no key (Kong generates one at creation; export it with deck dump)",
            );
            return;
        };
        let (id, opaque) = match portcullis_key_id(&key) {
            Some(id) => (id.to_string(), false),
            None => (opaque_key_id(cred, self.keys_converted + 1), true),
        };
        if self.keys_out.contains(&format!("id = {}\n", q(&id))) {
            self.not(path, format!("a second key with id {id}"));
            return;
        }
        let hash = hex::encode(Sha256::digest(key.as_bytes()));
        if opaque && !self.opaque_hashes.insert(hash.clone()) {
            self.not(path, "the same key as an earlier credential");
            return;
        }
        if opaque && key.chars().count() < MIN_OPAQUE_KEY {
            self.approx(
                path,
                format!(
                    "a key of {} characters can be guessed from its hash if the keys file leaks; \
                     replace it with `portcullis apikey generate --consumer NAME`",
                    key.chars().count()
                ),
            );
        }
        if cred.get("ttl").is_some_and(|v| !is_default(v)) {
            self.not(
                &format!("{path}.ttl"),
                "set expires_at in the keys file instead",
            );
        }
        let _ = write!(
            self.keys_out,
            "\n[[keys]]\nid = {}\nconsumer = {}\nhash = {}\nroles = {}\n{}",
            q(&id),
            q(consumer),
            q(&format!("sha256:{hash}")),
            qs(groups),
            if opaque { "opaque = true\n" } else { "" },
        );
        self.keys_converted += 1;
    }

    /// One `jwt` provider per Kong JWT credential: the credential's `key`
    /// is the issuer, its secret or public key the only key.
    pub(super) fn jwt_secret(&mut self, path: &str, s: &Map<String, Value>, consumer: &str) {
        let Some(issuer) = text(s, "key") else {
            self.not(path, "no key (the iss value)");
            return;
        };
        let alg = text(s, "algorithm").unwrap_or_else(|| "HS256".into());
        let name = out::name(&format!("jwt-{consumer}"), &mut self.names);
        let file = format!(
            "{name}.{}",
            if alg.starts_with("HS") {
                "secret"
            } else {
                "jwks.json"
            }
        );
        let source = if alg.starts_with("HS") {
            let Some(secret) = text(s, "secret") else {
                self.not(path, "no secret");
                return;
            };
            if secret != secret.trim() || secret.trim().len() < MIN_HMAC_SECRET {
                self.not(
                    &format!("{path}.secret"),
                    format!("Portcullis needs an HMAC secret of at least {MIN_HMAC_SECRET} characters without surrounding spaces"),
                );
                return;
            }
            if !matches!(alg.as_str(), "HS256" | "HS384" | "HS512") {
                self.not(
                    &format!("{path}.algorithm"),
                    format!("{alg}: Portcullis knows HS256, HS384, HS512"),
                );
                return;
            }
            self.files.push((file.clone(), secret.into_bytes()));
            "secret_file"
        } else {
            let Some(pem) = text(s, "rsa_public_key") else {
                self.not(path, format!("{alg} without rsa_public_key"));
                return;
            };
            match jwk_from_pem(&pem, &alg) {
                Ok(jwk) => {
                    let jwks = serde_json::json!({ "keys": [jwk] });
                    self.files
                        .push((file.clone(), jwks.to_string().into_bytes()));
                }
                Err(why) => {
                    self.not(&format!("{path}.rsa_public_key"), why);
                    return;
                }
            }
            "jwks_file"
        };
        let file_path = self.dir.join(&file);
        let mut body = format!("\n[auth.{}]\nkind = \"jwt\"\n", q(&name));
        let _ = writeln!(body, "issuer = {}", q(&issuer));
        body.push_str("audiences = []\n");
        let _ = writeln!(body, "algorithms = [{}]", q(&alg));
        let _ = writeln!(body, "{source} = {}", q(&file_path.to_string_lossy()));
        body.push_str("required_claims = []\n");
        self.jwt_providers.push(name.clone());
        self.providers.push(Provider { name, body });
    }
}

/// An id for a key of Kong's own form: the credential's id without its
/// dashes when it is one, else `kong` and the key's number.
pub(super) fn opaque_key_id(cred: &Map<String, Value>, number: usize) -> String {
    text(cred, "id")
        .map(|id| id.replace('-', ""))
        .filter(|id| {
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .unwrap_or_else(|| format!("kong{number}"))
}

/// `pc_<id>_<secret>` → id, as the api_key provider reads it.
pub(super) fn portcullis_key_id(key: &str) -> Option<&str> {
    let (id, secret) = key.strip_prefix("pc_")?.split_once('_')?;
    let alnum = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (alnum(id) && alnum(secret) && id.len() <= 64).then_some(id)
}

/// A JWK (public members only) from a PEM public key, for `jwks_file`.
pub(super) fn jwk_from_pem(pem: &str, alg: &str) -> Result<Value, String> {
    let key = openssl::pkey::PKey::public_key_from_pem(pem.as_bytes())
        .map_err(|_| "not a PEM public key".to_string())?;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let rsa = key.rsa().map_err(|_| format!("{alg} needs an RSA key"))?;
            Ok(serde_json::json!({
                "kty": "RSA", "use": "sig", "alg": alg,
                "n": b64(rsa.n().to_vec()), "e": b64(rsa.e().to_vec()),
            }))
        }
        "ES256" | "ES384" => {
            let ec = key.ec_key().map_err(|_| format!("{alg} needs an EC key"))?;
            let (crv, size) = if alg == "ES256" {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            let mut ctx = openssl::bn::BigNumContext::new().map_err(|e| e.to_string())?;
            let mut x = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
            let mut y = openssl::bn::BigNum::new().map_err(|e| e.to_string())?;
            ec.public_key()
                .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
                .map_err(|e| e.to_string())?;
            let pad = |n: &openssl::bn::BigNum| n.to_vec_padded(size).map_err(|e| e.to_string());
            Ok(serde_json::json!({
                "kty": "EC", "use": "sig", "alg": alg, "crv": crv,
                "x": b64(pad(&x)?), "y": b64(pad(&y)?),
            }))
        }
        other => Err(format!("algorithm {other}")),
    }
}
