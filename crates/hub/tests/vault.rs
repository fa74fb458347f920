use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use savdo_hub::registry::Credentials;
use savdo_hub::vault::{KEY_FILE_NAME, KeySource};
use savdo_hub::{Secret, Vault, VaultError, aad_for};

const PLAIN: &str = "sk_live_TOPSECRET_0123456789";

#[test]
fn round_trip_with_fresh_nonces() {
    let v = Vault::ephemeral().unwrap();
    let aad = aad_for("t1", "i1");
    let a = v.encrypt(&Secret::new(PLAIN), &aad).unwrap();
    let b = v.encrypt(&Secret::new(PLAIN), &aad).unwrap();
    assert!(a.starts_with(&format!("v1:{}:", v.active_key_id())), "{a}");
    assert_ne!(a, b, "a nonce was reused");
    assert!(!a.contains(PLAIN));
    assert_eq!(v.decrypt(&a, &aad).unwrap().expose(), PLAIN);
    assert_eq!(v.decrypt(&b, &aad).unwrap().expose(), PLAIN);
    let doc = serde_json::json!({"token": PLAIN, "n": 1});
    let sealed = v.encrypt_json(&doc, &aad).unwrap();
    assert_eq!(v.decrypt_json(&sealed, &aad).unwrap(), doc);
    let empty = v.encrypt_bytes(b"", &aad).unwrap();
    assert!(v.decrypt_bytes(&empty, &aad).unwrap().is_empty());
}

#[test]
fn wrong_owner_fails() {
    let v = Vault::ephemeral().unwrap();
    let sealed = v
        .encrypt(&Secret::new(PLAIN), &aad_for("t1", "i1"))
        .unwrap();
    assert!(matches!(
        v.decrypt(&sealed, &aad_for("t1", "i2")),
        Err(VaultError::Decrypt)
    ));
    assert!(matches!(
        v.decrypt(&sealed, &aad_for("t2", "i1")),
        Err(VaultError::Decrypt)
    ));
    assert!(matches!(v.decrypt(&sealed, b""), Err(VaultError::Decrypt)));
    // Another vault (another master key) cannot read it either, even under a forged key id.
    let other = Vault::ephemeral().unwrap();
    let forged = sealed.replacen(v.active_key_id(), other.active_key_id(), 1);
    assert!(matches!(
        other.decrypt(&forged, &aad_for("t1", "i1")),
        Err(VaultError::Decrypt)
    ));
}

#[test]
fn tampering_fails() {
    let v = Vault::ephemeral().unwrap();
    let aad = aad_for("t", "i");
    let sealed = v.encrypt(&Secret::new(PLAIN), &aad).unwrap();
    let (head, b64) = sealed.rsplit_once(':').unwrap();
    let blob = B64.decode(b64).unwrap();
    for i in [0, 12, blob.len() / 2, blob.len() - 1] {
        let mut t = blob.clone();
        t[i] ^= 0x01;
        let tampered = format!("{head}:{}", B64.encode(&t));
        assert!(
            matches!(v.decrypt(&tampered, &aad), Err(VaultError::Decrypt)),
            "byte {i}"
        );
    }
    let short = format!("{head}:{}", B64.encode(&blob[..20]));
    assert!(matches!(
        v.decrypt(&short, &aad),
        Err(VaultError::Malformed)
    ));
    assert!(matches!(
        v.decrypt("garbage", &aad),
        Err(VaultError::Malformed)
    ));
    assert!(matches!(
        v.decrypt("v2:k1:AAAA", &aad),
        Err(VaultError::Malformed)
    ));
    assert!(matches!(
        v.decrypt(&format!("{head}:%%%"), &aad),
        Err(VaultError::Malformed)
    ));
    let unknown = sealed.replacen(v.active_key_id(), "k00000000", 1);
    assert!(matches!(
        v.decrypt(&unknown, &aad),
        Err(VaultError::UnknownKey(_))
    ));
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn key_file_created_private_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join(KEY_FILE_NAME);
    let v = Vault::open_file(&path).unwrap();
    assert_eq!(v.source(), KeySource::File);
    assert!(path.exists());
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    let sealed = v.encrypt(&Secret::new(PLAIN), b"x").unwrap();
    let again = Vault::open_file(&path).unwrap();
    assert_eq!(again.active_key_id(), v.active_key_id());
    assert_eq!(again.decrypt(&sealed, b"x").unwrap().expose(), PLAIN);
    std::fs::write(&path, "{not json").unwrap();
    let err = Vault::open_file(&path).unwrap_err();
    assert!(matches!(err, VaultError::KeyFile { .. }), "{err}");
}

#[test]
fn rotation_keeps_old_values_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    let mut v = Vault::open_file(&path).unwrap();
    let old_id = v.active_key_id().to_owned();
    let aad = aad_for("t", "i");
    let c1 = v.encrypt(&Secret::new(PLAIN), &aad).unwrap();
    assert!(!v.needs_reencrypt(&c1));

    let new_id = v.rotate().unwrap();
    assert_ne!(new_id, old_id);
    assert_eq!(v.active_key_id(), new_id);
    assert_eq!(v.key_ids(), vec![new_id.as_str(), old_id.as_str()]);
    #[cfg(unix)]
    assert_eq!(mode(&path), 0o600);
    // Nothing but the key file is left behind by the atomic write.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    assert!(v.needs_reencrypt(&c1));
    assert_eq!(v.decrypt(&c1, &aad).unwrap().expose(), PLAIN);
    let c2 = v.reencrypt(&c1, &aad).unwrap();
    assert!(c2.starts_with(&format!("v1:{new_id}:")));
    assert!(!v.needs_reencrypt(&c2));
    assert!(v.reencrypt(&c1, &aad_for("t", "other")).is_err());

    // Another process loading the file sees the same ring.
    let reloaded = Vault::open_file(&path).unwrap();
    assert_eq!(reloaded.active_key_id(), new_id);
    assert_eq!(reloaded.decrypt(&c1, &aad).unwrap().expose(), PLAIN);
    assert_eq!(reloaded.decrypt(&c2, &aad).unwrap().expose(), PLAIN);

    // Once everything is re-encrypted the old key can go.
    assert!(v.retire(&old_id).unwrap());
    assert!(
        !v.retire(&new_id).unwrap(),
        "the active key cannot be retired"
    );
    assert!(matches!(
        v.decrypt(&c1, &aad),
        Err(VaultError::UnknownKey(_))
    ));
    let reloaded = Vault::open_file(&path).unwrap();
    assert_eq!(reloaded.key_ids(), vec![new_id.as_str()]);
}

#[test]
fn master_key_from_environment_value() {
    for bad in [
        "",
        "not base64!!",
        "c2hvcnQ=",
        &B64.encode([7u8; 31]),
        &B64.encode([7u8; 33]),
    ] {
        let err = Vault::from_master_key(bad).unwrap_err();
        assert!(matches!(err, VaultError::BadMasterKey(_)), "{bad}: {err}");
        assert!(err.to_string().contains("SAVDO_MASTER_KEY"));
    }
    let old = B64.encode([1u8; 32]);
    let new = B64.encode([2u8; 32]);
    let mut v_old = Vault::from_master_key(&old).unwrap();
    assert_eq!(v_old.source(), KeySource::Env);
    let sealed = v_old.encrypt(&Secret::new(PLAIN), b"a").unwrap();
    // Rotation with environment keys: put the new key first, the old one after it.
    let v = Vault::from_master_key(&format!("{new}, {old}")).unwrap();
    assert_eq!(v.key_ids().len(), 2);
    assert!(v.needs_reencrypt(&sealed));
    assert_eq!(v.decrypt(&sealed, b"a").unwrap().expose(), PLAIN);
    assert!(matches!(v_old.rotate(), Err(VaultError::ReadOnlyKeyring)));
    // Key ids are fingerprints: the same key gets the same id.
    assert_eq!(
        Vault::from_master_key(&old).unwrap().active_key_id(),
        v_old.active_key_id()
    );
}

#[test]
fn nothing_debug_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);
    let v = Vault::open_file(&path).unwrap();
    let file = std::fs::read_to_string(&path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&file).unwrap();
    let key_b64 = file["keys"][0]["key"].as_str().unwrap().to_owned();

    let secret = Secret::new(PLAIN);
    let sealed = v.encrypt(&secret, b"a").unwrap();
    let creds = Credentials::from_value(serde_json::json!({"token": PLAIN})).unwrap();
    let errors = [
        v.decrypt(&sealed, b"b").unwrap_err(),
        Vault::from_master_key(PLAIN).unwrap_err(),
        Vault::from_master_key(&key_b64[..20]).unwrap_err(),
    ];
    let mut shown = vec![
        format!("{v:?}"),
        format!("{v:#?}"),
        format!("{secret:?}"),
        format!("{secret}"),
        format!("{creds:?}"),
        format!("{:?}", v.decrypt(&sealed, b"a")),
        serde_json::to_string(&secret).unwrap(),
    ];
    for e in &errors {
        shown.push(format!("{e:?}"));
        shown.push(e.to_string());
    }
    for s in shown {
        assert!(!s.contains("TOPSECRET"), "{s}");
        assert!(!s.contains(&key_b64), "{s}");
        assert!(!s.contains(&key_b64[..20]), "{s}");
    }
}
