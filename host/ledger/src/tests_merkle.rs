//! The tree and its tiles against an independent RFC 6962 implementation written
//! plainly here (MTH, PATH, SUBPROOF), and against the RFC test vectors that
//! Certificate Transparency's implementations share.

use super::tiles::{DiskTiles, TILE_WIDTH, TileDir, TileId};
use super::tree::Tree;
use super::*;
use proptest::prelude::*;
use tempfile::TempDir;
use tlog_tiles::{Hash, TileHashReader};

/// RFC 6962 section 2.1, as written there, over leaf hashes.
pub(crate) mod rfc6962 {
    use sha2::{Digest, Sha256};

    pub(crate) type H = [u8; 32];

    pub(crate) fn leaf(data: &[u8]) -> H {
        let mut hasher = Sha256::new();
        hasher.update([0u8]);
        hasher.update(data);
        hasher.finalize().into()
    }

    fn node(left: &H, right: &H) -> H {
        let mut hasher = Sha256::new();
        hasher.update([1u8]);
        hasher.update(left);
        hasher.update(right);
        hasher.finalize().into()
    }

    /// The largest power of two smaller than `n` (n > 1).
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]) over the leaves' hashes.
    pub(crate) fn mth(leaves: &[H]) -> H {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                let k = split(n);
                node(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// PATH(m, D[n]): the audit path of leaf m.
    pub(crate) fn path(m: usize, leaves: &[H]) -> Vec<H> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split(n);
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// PROOF(m, D[n]): the consistency proof from the first m leaves.
    pub(crate) fn proof(m: usize, leaves: &[H]) -> Vec<H> {
        subproof(m, leaves, true)
    }

    fn subproof(m: usize, leaves: &[H], complete: bool) -> Vec<H> {
        let n = leaves.len();
        if m == n {
            return if complete {
                Vec::new()
            } else {
                vec![mth(leaves)]
            };
        }
        let k = split(n);
        if m <= k {
            let mut p = subproof(m, &leaves[..k], complete);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    /// Tile `index` of tile level `level`, `width` hashes wide, as C2SP defines it:
    /// MTH(D[(n·256 + i)·256^l : (n·256 + i + 1)·256^l]) for i below the width.
    pub(crate) fn tile(leaves: &[H], level: u32, index: u64, width: u16) -> Vec<u8> {
        let span = 256usize.pow(level);
        (0..usize::from(width))
            .flat_map(|i| {
                let start = (index as usize * 256 + i) * span;
                mth(&leaves[start..start + span])
            })
            .collect()
    }
}

use rfc6962::H;

fn unhex(text: &str) -> Vec<u8> {
    hex::decode(text).unwrap()
}

fn h(text: &str) -> H {
    unhex(text).try_into().unwrap()
}

/// The leaves of Certificate Transparency's RFC 6962 test vectors.
const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Their roots for sizes 0 to 8.
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, audit path) from the same vectors.
const CT_INCLUSION: [(u64, u64, &[&str]); 4] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (old size, new size, consistency proof) from the same vectors.
const CT_CONSISTENCY: [(u64, u64, &[&str]); 3] = [
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// A tree over `leaves` with every tile it makes written to a fresh directory.
fn tiled(leaves: &[Vec<u8>]) -> (TempDir, TileDir, Tree) {
    let tmp = TempDir::new().unwrap();
    let dir = TileDir::new(tmp.path().join("log.tlog"));
    let mut tree = Tree::default();
    for leaf in leaves {
        tree.push(leaf, &mut |id, data| dir.write(&id, &data))
            .unwrap();
    }
    for (id, data) in tree.unfinished_since(0) {
        dir.write(&id, data).unwrap();
    }
    (tmp, dir, tree)
}

fn as_hashes(proof: &[Hash]) -> Vec<H> {
    proof.iter().map(|h| h.0).collect()
}

#[test]
fn the_reference_implementation_reproduces_the_rfc_vectors() {
    let leaves: Vec<H> = CT_LEAVES.iter().map(|l| rfc6962::leaf(&unhex(l))).collect();
    for (size, root) in CT_ROOTS.iter().enumerate() {
        assert_eq!(rfc6962::mth(&leaves[..size]), h(root), "size {size}");
    }
    for (index, size, proof) in CT_INCLUSION {
        let want: Vec<H> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(
            rfc6962::path(index as usize, &leaves[..size as usize]),
            want
        );
    }
    for (old, new, proof) in CT_CONSISTENCY {
        let want: Vec<H> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(rfc6962::proof(old as usize, &leaves[..new as usize]), want);
    }
}

#[test]
fn the_tree_and_proofs_over_its_tiles_match_the_rfc_vectors() {
    for size in 0..=8 {
        let leaves: Vec<Vec<u8>> = CT_LEAVES[..size].iter().map(|l| unhex(l)).collect();
        let (_tmp, _dir, tree) = tiled(&leaves);
        assert_eq!(tree.root().0, h(CT_ROOTS[size]), "root of size {size}");
        assert_eq!(tree.size(), size as u64);
    }
    let leaves: Vec<Vec<u8>> = CT_LEAVES.iter().map(|l| unhex(l)).collect();
    for (index, size, proof) in CT_INCLUSION {
        let (_tmp, dir, tree) = tiled(&leaves[..size as usize]);
        let tiles = DiskTiles::new(&dir);
        let reader = TileHashReader::new(size, tree.root(), &tiles);
        let got = tlog_tiles::prove_record(size, index, &reader).unwrap();
        let want: Vec<H> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(as_hashes(&got), want, "inclusion of {index} in {size}");
    }
    for (old, new, proof) in CT_CONSISTENCY {
        let (_tmp, dir, tree) = tiled(&leaves[..new as usize]);
        let tiles = DiskTiles::new(&dir);
        let reader = TileHashReader::new(new, tree.root(), &tiles);
        let got = tlog_tiles::prove_tree(new, old, &reader).unwrap();
        let want: Vec<H> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(as_hashes(&got), want, "consistency of {old} with {new}");
    }
}

#[test]
fn tiles_hold_what_c2sp_defines_at_every_level_and_width() {
    // 256² + 3·256 + 5 leaves: full tiles at levels 0 and 1, partials at 0, 1 and 2.
    let count = 65536 + 3 * 256 + 5;
    let leaves: Vec<Vec<u8>> = (0..count).map(|i: u32| i.to_be_bytes().to_vec()).collect();
    let hashes: Vec<H> = leaves.iter().map(|l| rfc6962::leaf(l)).collect();
    let (_tmp, dir, tree) = tiled(&leaves);
    assert_eq!(tree.root().0, rfc6962::mth(&hashes));

    let mut expected = vec![
        TileId::hashes(0, 256, TILE_WIDTH),
        TileId::hashes(0, 258, TILE_WIDTH),
        TileId::hashes(0, 259, 5),
        TileId::hashes(1, 0, TILE_WIDTH),
        TileId::hashes(1, 1, 3),
        TileId::hashes(2, 0, 1),
    ];
    expected.extend((0..3).map(|n| TileId::hashes(0, n, TILE_WIDTH)));
    for id in expected {
        let Layer::Hashes(level) = id.layer else {
            unreachable!()
        };
        let want = rfc6962::tile(&hashes, u32::from(level), id.index, id.width);
        assert_eq!(fs::read(dir.file(&id)).unwrap(), want, "{id}");
    }
    let bundle = fs::read(dir.file(&TileId::entries(259, 5))).unwrap();
    let want: Vec<u8> = leaves[259 * 256..]
        .iter()
        .flat_map(|l| [&(l.len() as u16).to_be_bytes()[..], l].concat())
        .collect();
    assert_eq!(bundle, want);
}

#[test]
fn tile_paths_are_c2sp_paths() {
    let cases = [
        (TileId::hashes(0, 0, 1), "tile/0/000.p/1"),
        (TileId::hashes(0, 1, TILE_WIDTH), "tile/0/001"),
        (
            TileId::hashes(3, 1_234_067, TILE_WIDTH),
            "tile/3/x001/x234/067",
        ),
        (TileId::hashes(1, 1000, 17), "tile/1/x001/000.p/17"),
        (
            TileId::entries(1_234_067, 255),
            "tile/entries/x001/x234/067.p/255",
        ),
        (TileId::entries(999, TILE_WIDTH), "tile/entries/999"),
    ];
    for (id, path) in cases {
        assert_eq!(id.path(), path);
        assert_eq!(TileId::parse(path), Some(id));
    }
    for bad in [
        "tile/0/1",
        "tile/0/x000/001",
        "tile/0/001.p/256",
        "tile/0/001.p/0",
        "tile/64/001",
        "tile/data/001",
        "tile/0/001.p/01",
        "checkpoint",
    ] {
        assert_eq!(TileId::parse(bad), None, "{bad}");
    }
}

proptest! {
    #[test]
    fn tile_paths_agree_with_go_sumdb_s_tile_paths_less_the_height(
        level in 0u8..8,
        index in any::<u64>(),
        width in 1u16..=256,
    ) {
        // tlog_tiles writes Go's sumdb paths, tile/<H>/<L>/<N>[.p/<W>], and
        // tile/<H>/data/... for entries; C2SP drops the height and says "entries".
        let go = tlog_tiles::Tile::new(8, level, index, u32::from(width), false).path();
        let id = TileId::hashes(level, index, width);
        prop_assert_eq!(id.path(), go.replacen("tile/8/", "tile/", 1));
        prop_assert_eq!(TileId::parse(&id.path()), Some(id));
        let mut data = tlog_tiles::Tile::new(8, 0, index, u32::from(width), false);
        data.set_is_data();
        prop_assert_eq!(
            TileId::entries(index, width).path(),
            data.path().replacen("tile/8/data/", "tile/entries/", 1)
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_tree_root_tiles_and_proofs_match_the_reference(
        leaves in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..700),
        pick in any::<prop::sample::Index>(),
        old in any::<prop::sample::Index>(),
    ) {
        let hashes: Vec<H> = leaves.iter().map(|l| rfc6962::leaf(l)).collect();
        let (_tmp, dir, tree) = tiled(&leaves);
        let size = leaves.len() as u64;
        prop_assert_eq!(tree.root().0, rfc6962::mth(&hashes));
        for (id, data) in tree.unfinished_hashes() {
            let Layer::Hashes(level) = id.layer else { unreachable!() };
            prop_assert_eq!(data.to_vec(), rfc6962::tile(&hashes, u32::from(level), id.index, id.width));
        }

        let tiles = DiskTiles::new(&dir);
        let reader = TileHashReader::new(size, tree.root(), &tiles);
        let index = pick.index(leaves.len());
        let path = tlog_tiles::prove_record(size, index as u64, &reader).unwrap();
        prop_assert_eq!(as_hashes(&path), rfc6962::path(index, &hashes));
        let old = old.index(leaves.len()) + 1;
        let proof = tlog_tiles::prove_tree(size, old as u64, &reader).unwrap();
        prop_assert_eq!(as_hashes(&proof), rfc6962::proof(old, &hashes));
    }
}
