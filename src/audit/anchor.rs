//! The audit chain's head, anchored outside the database.
//!
//! The hash chain finds an edited, dropped or reordered record, but not a log whose last
//! records were deleted, nor one recomputed from an edit onwards: both are valid chains. So
//! the writer keeps the head — the last record's seq and hash — in a file beside the
//! database (`<db>.head`, reserved like the database), sealed with the key, and every record
//! carries its own seal (an HMAC of its hash). Verification then requires the anchored
//! record to be in the log with the anchored hash, and every record from `sealed_from` on to
//! carry a valid seal: cutting the tail, recomputing the chain or appending forged records
//! is found.
//!
//! The file is written after each commit that appended records, so after a crash it may lag
//! the log by the last group; records after the anchor are accepted when the anchored record
//! is intact and they are sealed. This module defines the anchor and its sealed text; the
//! store reads and writes the file (`store::head`).

use serde::{Deserialize, Serialize};

use crate::store::{Field, Sealer};

/// The anchored head of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Seq of the last record anchored (0: the empty log).
    pub seq: i64,
    /// Its hash (the genesis hash for the empty log).
    pub hash: String,
    /// The first seq that carries a seal (records before it predate seals).
    pub sealed_from: i64,
}

/// What the anchor file holds, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorRead {
    /// No file.
    Missing,
    /// A file that does not parse or whose seal does not verify.
    Forged,
    Valid(Anchor),
}

#[derive(Serialize, Deserialize)]
struct AnchorFile {
    seq: i64,
    hash: String,
    sealed_from: i64,
    mac: String,
}

impl Anchor {
    fn seal(&self, sealer: &Sealer) -> String {
        sealer.seal(
            "audit_head",
            &[
                self.seq.into(),
                Field::Text(&self.hash),
                self.sealed_from.into(),
            ],
        )
    }

    /// Parses and checks the anchor file's text.
    pub fn parse(text: &str, sealer: &Sealer) -> AnchorRead {
        let Ok(file) = serde_json::from_str::<AnchorFile>(text) else {
            return AnchorRead::Forged;
        };
        let anchor = Anchor {
            seq: file.seq,
            hash: file.hash,
            sealed_from: file.sealed_from,
        };
        if anchor.seal(sealer) == file.mac {
            AnchorRead::Valid(anchor)
        } else {
            AnchorRead::Forged
        }
    }

    /// The anchor file's text, sealed.
    pub fn to_text(&self, sealer: &Sealer) -> String {
        serde_json::to_string(&AnchorFile {
            seq: self.seq,
            hash: self.hash.clone(),
            sealed_from: self.sealed_from,
            mac: self.seal(sealer),
        })
        .unwrap_or_default()
    }
}

/// The seal of one record: an HMAC of its hash (which covers every field and the chain).
pub fn record_seal(sealer: &Sealer, hash: &str) -> String {
    sealer.seal("audit", &[Field::Text(hash)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_round_trips_and_a_forged_one_is_found() {
        let sealer = Sealer::from_key([1; 32]);
        let anchor = Anchor {
            seq: 7,
            hash: "ab".into(),
            sealed_from: 1,
        };
        let text = anchor.to_text(&sealer);
        assert_eq!(Anchor::parse(&text, &sealer), AnchorRead::Valid(anchor));
        // Moving the anchor back (to hide the last records) breaks its seal.
        let moved = text.replace("\"seq\":7", "\"seq\":5");
        assert_eq!(Anchor::parse(&moved, &sealer), AnchorRead::Forged);
        let other = Sealer::from_key([2; 32]);
        assert_eq!(Anchor::parse(&text, &other), AnchorRead::Forged);
        assert_eq!(Anchor::parse("{", &sealer), AnchorRead::Forged);
    }
}
