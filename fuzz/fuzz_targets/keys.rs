//! Key templates and validation: whatever the input, an accepted key is safe
//! to join under a directory, and every builder either refuses or yields one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mediaflow::storage::ObjectKey;
use mediaflow::storage::keys::{KeyBase, Shard, StorageTemplate, VariantKey, split_image_id};

fn assert_safe(key: &ObjectKey) {
    let s = key.as_str();
    assert!(!s.is_empty() && !s.starts_with('/') && !s.ends_with('/'));
    assert!(!s.contains('\\') && !s.chars().any(char::is_control));
    assert!(s.split('/').all(|seg| !seg.is_empty() && !seg.starts_with('.')));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let (template, id, shard) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    if let Ok(key) = ObjectKey::parse(text) {
        assert_safe(&key);
    }
    for sharding in [true, false] {
        let Ok(t) = StorageTemplate::parse(template, sharding) else { continue };
        let Ok((base, ext)) = split_image_id(id) else { continue };
        let shard = shard.and_then(|s| Shard::parse(s).ok());
        if let Ok(key) = t.original(&base, ext.as_ref(), shard.as_ref()) {
            assert_safe(&key);
            assert!(key.as_str().contains(base.as_str()));
        }
    }
    if let Ok(base) = KeyBase::parse(id) {
        let name = template.rsplit('/').next().unwrap_or("");
        if let Some(v) = VariantKey::parse_name(name, &base) {
            // What parses back renders to the same name.
            if let Ok(key) = v.key("t", &base) {
                assert_eq!(key.as_str(), format!("t/{name}"));
            }
        }
    }
});
