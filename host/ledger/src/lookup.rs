//! One operation's entry, read back for an operator: where it is, its chain link to
//! its neighbours, and whether it holds exactly the envelope the database says it
//! should. Reads the file at rest with no lock, like [`verify`](crate::verify).

use serde::Serialize;

use super::*;

/// A neighbour of an entry: its position, its hashes and whose operation it holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Neighbour {
    /// Its sequence number.
    pub seq: u64,
    /// Its `prev` field.
    pub prev: String,
    /// Its `hash` field.
    pub hash: String,
    /// The `op_id` of its payload, when it has one.
    pub op_id: Option<String>,
}

/// The first entry of one operation, with the entries on either side of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FoundEntry {
    /// The ledger file.
    pub path: String,
    /// Its sequence number.
    pub seq: u64,
    /// The hash of the entry before it (64 zeros for the first).
    pub prev: String,
    /// The SHA-256 of its payload, as written.
    pub sha256: String,
    /// Its chain hash, as written.
    pub hash: String,
    /// The payload bytes, as written.
    pub payload: String,
    /// The entry before it, if any.
    pub previous: Option<Neighbour>,
    /// The entry after it, if any.
    pub next: Option<Neighbour>,
    /// Later entries of the same operation (a redelivery after a crash), by seq.
    pub again_at: Vec<u64>,
}

/// One check of [`FoundEntry::check`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntryCheck {
    /// What was checked.
    pub name: &'static str,
    /// Whether it holds.
    pub ok: bool,
    /// What was compared.
    pub detail: String,
}

#[derive(Deserialize)]
struct Fields<'a> {
    seq: u64,
    prev: String,
    sha256: String,
    hash: String,
    #[serde(borrow)]
    payload: &'a RawValue,
}

#[derive(Deserialize)]
struct OpId {
    op_id: Option<String>,
}

fn neighbour(f: &Fields<'_>) -> Neighbour {
    Neighbour {
        seq: f.seq,
        prev: f.prev.clone(),
        hash: f.hash.clone(),
        op_id: serde_json::from_str::<OpId>(f.payload.get())
            .ok()
            .and_then(|o| o.op_id),
    }
}

/// The first entry of `op_id` in the ledger at `path`, or `None`. Lines that cannot be
/// read are stepped over here; `verify` is what names them.
pub fn find_entry(path: &Path, op_id: &str) -> Result<Option<FoundEntry>, LedgerError> {
    let file = File::open(path).map_err(|source| LedgerError::Io {
        path: path.to_path_buf(),
        action: "open",
        source,
    })?;
    let mut found: Option<FoundEntry> = None;
    let mut before: Option<Neighbour> = None;
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|source| LedgerError::Io {
            path: path.to_path_buf(),
            action: "read",
            source,
        })?;
        let Ok(fields) = serde_json::from_str::<Fields>(&line) else {
            continue;
        };
        let this = neighbour(&fields);
        match &mut found {
            Some(f) if f.next.is_none() => f.next = Some(this.clone()),
            _ => {}
        }
        if this.op_id.as_deref() == Some(op_id) {
            match &mut found {
                Some(f) => f.again_at.push(fields.seq),
                None => {
                    found = Some(FoundEntry {
                        path: path.display().to_string(),
                        seq: fields.seq,
                        prev: fields.prev.clone(),
                        sha256: fields.sha256.clone(),
                        hash: fields.hash.clone(),
                        payload: fields.payload.get().to_string(),
                        previous: before.take(),
                        next: None,
                        again_at: Vec::new(),
                    })
                }
            }
        }
        before = Some(this);
    }
    Ok(found)
}

impl FoundEntry {
    /// Whether the entry holds `payload` (the canonical envelope the database's row
    /// makes), its digest is right, its chain hash follows from its fields, and its
    /// neighbours link to it.
    pub fn check(&self, payload: &[u8]) -> Vec<EntryCheck> {
        let digest: [u8; 32] = Sha256::digest(payload).into();
        let expected = hex::encode(digest);
        let mut checks = vec![
            EntryCheck {
                name: "payload",
                ok: self.payload.as_bytes() == payload,
                detail: "the entry holds the envelope the stored row makes, byte for byte".into(),
            },
            EntryCheck {
                name: "sha256",
                ok: self.sha256 == expected,
                detail: format!("entry {} / envelope {expected}", self.sha256),
            },
        ];
        let chained = decode_hash(&self.prev)
            .zip(decode_hash(&self.sha256))
            .map(|(prev, d)| hex::encode(chain_hash(&prev, self.seq, &d)));
        checks.push(EntryCheck {
            name: "chain hash",
            ok: chained.as_deref() == Some(self.hash.as_str()),
            detail: format!(
                "SHA-256(prev || seq || sha256) = {}",
                chained.as_deref().unwrap_or("(unreadable fields)")
            ),
        });
        let first = self.seq == 1 && self.prev == "0".repeat(64);
        checks.push(EntryCheck {
            name: "link to the previous entry",
            ok: match &self.previous {
                Some(p) => p.hash == self.prev && p.seq + 1 == self.seq,
                None => first,
            },
            detail: match &self.previous {
                Some(p) => format!("entry {} has hash {}", p.seq, p.hash),
                None => "the first entry links to 64 zeros".into(),
            },
        });
        if let Some(n) = &self.next {
            checks.push(EntryCheck {
                name: "link from the next entry",
                ok: n.prev == self.hash && n.seq == self.seq + 1,
                detail: format!("entry {} has prev {}", n.seq, n.prev),
            });
        }
        checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(op_id: &str) -> Envelope {
        let payload = format!(r#"{{"op_id":"{op_id}","n":1}}"#).into_bytes();
        Envelope {
            op_id: op_id.into(),
            sha256: hex::encode(Sha256::digest(&payload)),
            payload,
        }
    }

    #[test]
    fn an_entry_is_found_with_its_neighbours_and_every_check_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.ledger");
        let mut ledger = Ledger::open(&path).unwrap();
        ledger
            .append(&[envelope("a"), envelope("b"), envelope("c")])
            .unwrap();
        drop(ledger);
        let found = find_entry(&path, "b").unwrap().unwrap();
        assert_eq!(found.seq, 2);
        assert_eq!(found.previous.as_ref().unwrap().op_id.as_deref(), Some("a"));
        assert_eq!(found.next.as_ref().unwrap().op_id.as_deref(), Some("c"));
        let checks = found.check(&envelope("b").payload);
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert_eq!(checks.len(), 5);
        assert!(find_entry(&path, "z").unwrap().is_none());
    }

    #[test]
    fn a_different_envelope_or_a_broken_link_fails_its_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.ledger");
        let mut ledger = Ledger::open(&path).unwrap();
        ledger.append(&[envelope("a"), envelope("b")]).unwrap();
        drop(ledger);
        let mut found = find_entry(&path, "b").unwrap().unwrap();
        let other = envelope("x").payload;
        let failed: Vec<_> = found
            .check(&other)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, ["payload", "sha256"]);
        found.prev = "1".repeat(64);
        let failed: Vec<_> = found
            .check(&envelope("b").payload)
            .into_iter()
            .filter(|c| !c.ok)
            .map(|c| c.name)
            .collect();
        assert_eq!(failed, ["chain hash", "link to the previous entry"]);
    }
}
