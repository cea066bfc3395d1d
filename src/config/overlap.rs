//! Key spaces of profiles must not overlap (checked once, at load).
//!
//! Each profile writes three kinds of keys: originals (its `storage_path`),
//! variants (under `thumb_folder`) and proxies (under `proxy_folder`). If a
//! key one of them can produce is also a key another can produce, or a
//! folder another needs (a file and a folder cannot share a name on the
//! filesystem backend), then an upload to one profile can replace, shadow or
//! block another's objects: a `victim_64.webp` upload served as the victim's
//! thumbnail, a DELETE removing another profile's original, a `default`
//! upload under shard `banners` landing among the banners under the looser
//! default policy. So every pair of key spaces is compared as patterns:
//!
//! - segment by segment, each segment a sequence of character classes with
//!   repeat counts (`{key_base}` is `[A-Za-z0-9_-]+`, the hash shard
//!   `[0-9a-f]{2}`, a custom shard `[a-z0-9_-]{1,64}`…);
//! - two spaces overlap when their first `min(len)` segments can all be equal.
//!
//! An overlap that needs no custom shard refuses the file. One that needs a
//! custom shard equal to a literal folder of the other profile reserves that
//! name: a client may not send it as a shard ([`Reserved`]); any other
//! overlap through custom shards refuses the file too.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::storage::keys::Piece;

use super::Profile;

/// A set of ASCII characters, as a bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chars(u128);

impl Chars {
    fn of(pred: impl Fn(u8) -> bool) -> Self {
        Self((0u8..128).filter(|&b| pred(b)).fold(0, |m, b| m | 1u128 << b))
    }
    fn one(b: u8) -> Self {
        Self(1u128 << (b & 127))
    }
    fn meets(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

/// `set{min,max}`; `max: None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rep {
    set: Chars,
    min: u16,
    max: Option<u16>,
}

/// What a placeholder can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    KeyBase,
    Ext,
    HashShard,
    CustomShard,
    /// What follows `{key_base}_` in a variant's name: width, box, options.
    VariantTail,
}

impl Var {
    fn rep(self) -> Rep {
        let key_chars = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        match self {
            Self::KeyBase => Rep { set: Chars::of(key_chars), min: 1, max: None },
            Self::Ext => Rep { set: Chars::of(|b| b.is_ascii_alphanumeric()), min: 1, max: Some(16) },
            Self::HashShard => {
                Rep { set: Chars::of(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), min: 2, max: Some(2) }
            }
            Self::CustomShard => Rep {
                set: Chars::of(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'),
                min: 1,
                max: Some(64),
            },
            Self::VariantTail => Rep { set: Chars::of(|b| b.is_ascii_alphanumeric() || b == b'_'), min: 1, max: None },
        }
    }
}

/// One piece of a segment pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(String),
    Var(Var),
}

type Segment = Vec<Tok>;

/// The keys one profile writes of one kind.
#[derive(Debug, Clone)]
struct Space {
    profile: String,
    kind: &'static str,
    segments: Vec<Segment>,
}

impl Space {
    fn custom_shard_at(&self) -> Option<usize> {
        self.segments.iter().position(|s| s.contains(&Tok::Var(Var::CustomShard)))
    }

    fn uses_custom_shard(&self) -> bool {
        self.custom_shard_at().is_some()
    }

    fn example(&self) -> String {
        let show = |t: &Tok| match t {
            Tok::Lit(l) => l.clone(),
            Tok::Var(Var::KeyBase) => "{key_base}".into(),
            Tok::Var(Var::Ext) => "{ext}".into(),
            Tok::Var(Var::HashShard) => "{shard}".into(),
            Tok::Var(Var::CustomShard) => "{custom shard}".into(),
            Tok::Var(Var::VariantTail) => "{width…}".into(),
        };
        self.segments.iter().map(|s| s.iter().map(show).collect::<String>()).collect::<Vec<_>>().join("/")
    }
}

/// Splits pieces into `/`-separated segments of tokens.
fn segments(pieces: impl IntoIterator<Item = Tok>) -> Vec<Segment> {
    let mut out = vec![Vec::new()];
    for tok in pieces {
        match tok {
            Tok::Lit(text) => {
                for (i, part) in text.split('/').enumerate() {
                    if i > 0 {
                        out.push(Vec::new());
                    }
                    if !part.is_empty() {
                        out.last_mut().expect("never empty").push(Tok::Lit(part.to_owned()));
                    }
                }
            }
            var => out.last_mut().expect("never empty").push(var),
        }
    }
    out
}

fn folder(path: &str) -> Vec<Tok> {
    vec![Tok::Lit(format!("{path}/"))]
}

/// The key spaces of a profile: originals with the hash shard, with a custom
/// shard (when clients may send one), variants and proxies of both.
fn spaces(p: &Profile) -> Vec<Space> {
    let custom = p.enable_sharding && p.storage_path.uses_shard();
    let original = |shard: Var| {
        p.storage_path.pieces().iter().map(move |piece| match piece {
            Piece::Literal(l) => Tok::Lit(l.clone()),
            Piece::KeyBase => Tok::Var(Var::KeyBase),
            Piece::Ext => Tok::Var(Var::Ext),
            Piece::Shard => Tok::Var(shard),
        })
    };
    let space = |kind, toks: Vec<Tok>| Space { profile: p.name.clone(), kind, segments: segments(toks) };
    let shard_folder = |base: &str| {
        let mut t = folder(base);
        t.extend([
            Tok::Lit(format!("{}/", crate::storage::keys::SHARD_FOLDER)),
            Tok::Var(Var::CustomShard),
            Tok::Lit("/".into()),
        ]);
        t
    };
    let variant_name = [
        Tok::Var(Var::KeyBase),
        Tok::Lit("_".into()),
        Tok::Var(Var::VariantTail),
        Tok::Lit(".".into()),
        Tok::Var(Var::Ext),
    ];
    let proxy_name = [Tok::Var(Var::KeyBase), Tok::Lit(".".into()), Tok::Var(Var::Ext)];
    let mut out = vec![space("originals", original(Var::HashShard).collect())];
    let mut thumbs = folder(&p.thumb_folder);
    thumbs.extend(variant_name.clone());
    out.push(space("variants", thumbs));
    if let Some(proxies) = p.video().and_then(|v| v.proxy_folder.as_ref()) {
        let mut t = folder(proxies);
        t.extend(proxy_name.clone());
        out.push(space("proxies", t));
    }
    if custom {
        out.push(space("originals", original(Var::CustomShard).collect()));
        let mut t = shard_folder(&p.thumb_folder);
        t.extend(variant_name);
        out.push(space("variants", t));
        if let Some(proxies) = p.video().and_then(|v| v.proxy_folder.as_ref()) {
            let mut t = shard_folder(proxies);
            t.extend(proxy_name);
            out.push(space("proxies", t));
        }
    }
    out
}

/// The segment as a sequence of repeats (a literal is one repeat per byte).
fn reps(segment: &Segment) -> Vec<Rep> {
    segment
        .iter()
        .flat_map(|t| match t {
            Tok::Lit(l) => l.bytes().map(|b| Rep { set: Chars::one(b), min: 1, max: Some(1) }).collect::<Vec<_>>(),
            Tok::Var(v) => vec![v.rep()],
        })
        .collect()
}

/// Whether some string matches both segment patterns: a search over the
/// product of the two (tiny) automata, one character at a time.
fn segments_meet(a: &Segment, b: &Segment) -> bool {
    let (a, b) = (reps(a), reps(b));
    // (index in a, count in a[i], index in b, count in b[j]); counts of an
    // unbounded repeat are capped at its minimum (more changes nothing).
    let mut seen = HashSet::new();
    let mut stack = vec![(0usize, 0u16, 0usize, 0u16)];
    while let Some(state) = stack.pop() {
        if !seen.insert(state) {
            continue;
        }
        let (i, ci, j, cj) = state;
        if i == a.len() && j == b.len() {
            return true;
        }
        if i < a.len() && ci >= a[i].min {
            stack.push((i + 1, 0, j, cj));
        }
        if j < b.len() && cj >= b[j].min {
            stack.push((i, ci, j + 1, 0));
        }
        if i < a.len() && j < b.len() && a[i].set.meets(b[j].set) {
            let room = |r: &Rep, c: u16| r.max.is_none_or(|m| c < m);
            if room(&a[i], ci) && room(&b[j], cj) {
                let step = |r: &Rep, c: u16| if r.max.is_none() { (c + 1).min(r.min) } else { c + 1 };
                stack.push((i, step(&a[i], ci), j, step(&b[j], cj)));
            }
        }
    }
    false
}

/// Whether a key of `a` can equal a key of `b`, or be a folder of one.
fn spaces_meet(a: &Space, b: &Space) -> bool {
    a.segments.iter().zip(&b.segments).all(|(x, y)| segments_meet(x, y))
}

/// Custom shards a client may not send, per profile: names of folders that
/// other profiles write into.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reserved(pub BTreeMap<String, BTreeSet<String>>);

/// Why two profiles cannot be loaded together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The profile whose keys reach into the other's.
    pub profile: String,
    /// What the problem is, with example keys.
    pub message: String,
}

/// Compares every pair of key spaces of `profiles` (see the module doc).
pub fn check(profiles: &[&Profile]) -> Result<Reserved, Overlap> {
    let all: Vec<Space> = profiles.iter().flat_map(|p| spaces(p)).collect();
    let mut reserved = Reserved::default();
    for (n, a) in all.iter().enumerate() {
        for b in &all[n + 1..] {
            let same = a.profile == b.profile && a.kind == b.kind;
            if same || !spaces_meet(a, b) {
                continue;
            }
            let relation =
                if a.segments.len() == b.segments.len() { "the same key as" } else { "a folder of or a file in" };
            let refuse = || Overlap {
                profile: a.profile.clone(),
                message: format!(
                    "its {} ({}) can be {relation} the {} of profile '{}' ({}): an upload to one could replace, \
                     shadow or block the other's objects; give them distinct folders",
                    a.kind,
                    a.example(),
                    b.kind,
                    b.profile,
                    b.example()
                ),
            };
            if !a.uses_custom_shard() && !b.uses_custom_shard() {
                return Err(refuse());
            }
            // Through a custom shard only: if the shard is a whole segment and
            // the other space has a literal folder name there, reserving that
            // name separates them.
            let reservable = [(a, b), (b, a)].into_iter().find_map(|(x, y)| {
                let at = x.custom_shard_at()?;
                if x.segments[at] != [Tok::Var(Var::CustomShard)] {
                    return None;
                }
                match y.segments.get(at)?.as_slice() {
                    [Tok::Lit(name)] => Some((x.profile.clone(), name.clone())),
                    _ => None,
                }
            });
            match reservable {
                Some((profile, name)) => {
                    reserved.0.entry(profile).or_default().insert(name);
                }
                None => return Err(refuse()),
            }
        }
    }
    Ok(reserved)
}

#[cfg(test)]
mod tests {
    use crate::config::Profiles;

    fn parse(profiles: &str) -> Result<Profiles, String> {
        Profiles::parse(&format!("profiles:\n{profiles}"), "f.yaml").map_err(|e| e.to_string())
    }

    fn profile(name: &str, storage_path: &str, extra: &str) -> String {
        format!(
            "  {name}:\n    allowed_mimes: [image/png]\n    size_max_bytes: 100\n    storage_path: \"{storage_path}\"\n    sizes: [64]\n{extra}"
        )
    }

    #[test]
    fn bundled_profiles_do_not_overlap() {
        let p = Profiles::example();
        assert!(p.iter().all(|p| p.reserved_shards.is_empty()));
    }

    #[test]
    fn the_builtin_default_reserves_the_folders_of_other_profiles() {
        // No `default` in the file: the built-in one stores at
        // `originals/{shard?}/{key_base}`, so shard `banners` would be the
        // banner profile's folder.
        let p = parse(&profile("banner", "originals/banners/{key_base}", "")).unwrap();
        let default = p.get("default").unwrap();
        assert!(default.reserved_shards.contains("banners"), "{:?}", default.reserved_shards);
        assert!(default.client_shard(Some("banners")).is_err());
        assert!(default.client_shard(Some("tenant-a")).unwrap().is_some());
        // Nested one level deeper: the shard would be a folder of its keys.
        let p = parse(&profile("a", "originals/avatars/{shard?}/{key_base}", "    enable_sharding: true\n")).unwrap();
        assert!(p.get("default").unwrap().reserved_shards.contains("avatars"));
        assert!(p.get("a").unwrap().reserved_shards.is_empty(), "the hash shard cannot be 'avatars'");
    }

    #[test]
    fn an_upload_cannot_become_another_profiles_thumbnail() {
        // `victim_64.webp` uploaded to `files` would be victim's 64 px thumbnail.
        let files = profile("files", "media/{key_base}.{ext}", "    thumb_folder: t/files\n");
        let photos = profile("photos", "p/{key_base}", "    thumb_folder: media\n");
        let e = parse(&format!("{files}{photos}")).unwrap_err();
        assert!(e.contains("profile 'files'") && e.contains("'photos'"), "{e}");
        assert!(e.contains("media/{key_base}.{ext}"), "names the keys: {e}");
    }

    #[test]
    fn same_keys_are_refused() {
        let a = profile("a", "o/{key_base}", "    thumb_folder: ta\n");
        let b = profile("b", "o/{key_base}", "    thumb_folder: tb\n");
        assert!(parse(&format!("{a}{b}")).unwrap_err().contains("the same key as"));
        // A key of one is a folder of the other's keys (fs backend: file vs folder).
        let c = profile("c", "o/{key_base}/x", "    thumb_folder: tc\n");
        assert!(parse(&format!("{a}{c}")).unwrap_err().contains("a folder of"));
        // Same thumb folder for two profiles: their variants collide.
        let d = profile("d", "d/{key_base}", "    thumb_folder: ta\n");
        assert!(parse(&format!("{a}{d}")).is_err());
    }

    #[test]
    fn disjoint_layouts_load() {
        let a = profile("a", "o/a/{key_base}", "    thumb_folder: t/a\n");
        let b = profile("b", "o/b/{key_base}.{ext}", "    thumb_folder: t/b\n");
        // Originals and variants side by side: `{key_base}` has no dot, a variant always has one.
        let c = profile("c", "o/c/{key_base}", "    thumb_folder: o/c\n");
        assert!(parse(&format!("{a}{b}{c}")).is_ok());
    }

    #[test]
    fn custom_shards_that_reach_variables_refuse_the_file() {
        // A custom shard of `a` can be any key_base of `b`: no name to reserve.
        let a = profile("a", "o/{shard}/{key_base}", "    enable_sharding: true\n    thumb_folder: ta\n");
        let b = profile("b", "o/{key_base}/x/{key_base}", "    thumb_folder: tb\n");
        assert!(parse(&format!("{a}{b}")).is_err());
    }

    #[test]
    fn segment_patterns() {
        use super::{Tok, Var, segments_meet};
        let lit = |s: &str| vec![Tok::Lit(s.into())];
        let var = |v| vec![Tok::Var(v)];
        assert!(segments_meet(&lit("ab"), &var(Var::HashShard)));
        assert!(!segments_meet(&lit("avatars"), &var(Var::HashShard)));
        assert!(segments_meet(&lit("avatars"), &var(Var::CustomShard)));
        assert!(!segments_meet(&lit("Avatars"), &var(Var::CustomShard)));
        assert!(!segments_meet(&lit(&"a".repeat(65)), &var(Var::CustomShard)));
        let name = vec![
            Tok::Var(Var::KeyBase),
            Tok::Lit("_".into()),
            Tok::Var(Var::VariantTail),
            Tok::Lit(".".into()),
            Tok::Var(Var::Ext),
        ];
        assert!(segments_meet(&lit("k_256.webp"), &name));
        assert!(!segments_meet(&lit("avatars"), &name));
        assert!(!segments_meet(&var(Var::KeyBase), &name), "a key_base has no dot");
    }
}
