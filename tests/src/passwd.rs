//! Password-file lines for `tandem-auth-file` that the tests write themselves.

use base64::Engine as _;

/// An argon2id PHC hash of `password` with memory `m` KiB and `t` passes (what
/// `tandem-auth-file passwd` writes, with the parameters a test chooses: cheap ones for
/// speed, costly ones to load the plugin).
pub fn argon2id(password: &str, salt: &[u8; 16], m: u32, t: u32) -> String {
    let params = argon2::Params::new(m, t, 1, Some(32)).expect("argon2 parameters");
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .expect("argon2 hash");
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    format!(
        "$argon2id$v=19$m={m},t={t},p=1${}${}",
        b64.encode(salt),
        b64.encode(out)
    )
}
