//! Which rows are sealed, field by field: capabilities (grants), human requests (answers)
//! and images (the grants a spawn starts with).
//!
//! A seal covers the fields exactly as stored, including the mutable ones (`revoked`,
//! `consumed`, a request's status, answer and `used`), so every statement that changes one
//! writes the new seal with it. A row whose seal does not verify was not written by the
//! kernel: it is refused where it is read (logged, and never treated as a grant or answer).

use super::seal::{Field, Sealer};

/// A capability row's stored fields.
pub(crate) struct CapFields<'a> {
    pub id: i64,
    pub subject: i64,
    pub resource: &'a str,
    pub rights: &'a str,
    pub policy: &'a str,
    pub issuer: Option<i64>,
    pub parent: Option<i64>,
    pub expires_at: Option<i64>,
    pub delegable: bool,
    pub revocable: bool,
    pub revoked: bool,
    pub consumed: bool,
}

impl CapFields<'_> {
    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            self.id.into(),
            self.subject.into(),
            self.resource.into(),
            self.rights.into(),
            self.policy.into(),
            self.issuer.into(),
            self.parent.into(),
            self.expires_at.into(),
            self.delegable.into(),
            self.revocable.into(),
            self.revoked.into(),
            self.consumed.into(),
        ]
    }

    pub fn seal(&self, sealer: &Sealer) -> String {
        sealer.seal("capability", &self.fields())
    }

    pub fn verify(&self, sealer: &Sealer, mac: Option<&str>) -> bool {
        sealer.verify("capability", &self.fields(), mac)
    }
}

/// A human request row's stored fields.
pub(crate) struct RequestFields<'a> {
    pub id: &'a str,
    pub pid: i64,
    pub kind: &'a str,
    pub channel: &'a str,
    pub payload: &'a str,
    pub args_hash: &'a str,
    pub status: &'a str,
    pub answer: Option<&'a str>,
    pub answered_by: Option<&'a str>,
    pub used: bool,
    pub invocation: Option<&'a str>,
}

impl RequestFields<'_> {
    fn fields(&self) -> Vec<Field<'_>> {
        vec![
            self.id.into(),
            self.pid.into(),
            self.kind.into(),
            self.channel.into(),
            self.payload.into(),
            self.args_hash.into(),
            self.status.into(),
            self.answer.into(),
            self.answered_by.into(),
            self.used.into(),
            self.invocation.into(),
        ]
    }

    pub fn seal(&self, sealer: &Sealer) -> String {
        sealer.seal("human_request", &self.fields())
    }

    pub fn verify(&self, sealer: &Sealer, mac: Option<&str>) -> bool {
        sealer.verify("human_request", &self.fields(), mac)
    }
}

/// The seal of a process's requestable ceiling.
pub(crate) fn requestable_seal(sealer: &Sealer, pid: i64, specs: &str) -> String {
    sealer.seal("requestable", &[pid.into(), specs.into()])
}

/// The seal of an image row.
pub(crate) fn image_seal(
    sealer: &Sealer,
    id: &str,
    version: &str,
    manifest: &str,
    registered_by: Option<i64>,
) -> String {
    sealer.seal(
        "image",
        &[
            id.into(),
            version.into(),
            manifest.into(),
            registered_by.into(),
        ],
    )
}

/// Logs a refused row; the caller skips it.
pub(crate) fn refused(table: &str, id: impl std::fmt::Display) {
    tracing::error!(
        table,
        %id,
        "refusing a row the kernel did not write (its seal does not verify): it grants and answers nothing"
    );
}

/// Seals the rows of a database written before rows were sealed, once, when its key is
/// created: the rows present at that moment are taken as the kernel's own, and an
/// `integrity.adopt` audit record says how many there were. (A key is created only when no
/// row carries a seal; see `Store::open`.)
pub(crate) async fn adopt_unsealed_rows(store: &super::Store) -> Result<(), super::StoreError> {
    use sqlx::Row;
    let sealer = store.sealer();
    let pool = store.pool();
    let mut batch = super::WriteBatch::default();
    let caps = sqlx::query(
        "SELECT id, subject, resource, rights, policy, issuer, parent, expires_at, delegable, \
         revocable, revoked, consumed FROM capabilities WHERE mac IS NULL",
    )
    .fetch_all(pool)
    .await?;
    for row in &caps {
        let id: i64 = row.try_get("id")?;
        let resource: String = row.try_get("resource")?;
        let rights: String = row.try_get("rights")?;
        let policy: String = row.try_get("policy")?;
        let seal = CapFields {
            id,
            subject: row.try_get("subject")?,
            resource: &resource,
            rights: &rights,
            policy: &policy,
            issuer: row.try_get("issuer")?,
            parent: row.try_get("parent")?,
            expires_at: row.try_get("expires_at")?,
            delegable: row.try_get::<i64, _>("delegable")? != 0,
            revocable: row.try_get::<i64, _>("revocable")? != 0,
            revoked: row.try_get::<i64, _>("revoked")? != 0,
            consumed: row.try_get::<i64, _>("consumed")? != 0,
        }
        .seal(sealer);
        batch.push(
            "UPDATE capabilities SET mac = ? WHERE id = ?",
            vec![seal.into(), id.into()],
        );
    }
    let requests = sqlx::query(
        "SELECT id, pid, kind, channel, payload, args_hash, status, answer, answered_by, used, \
         invocation FROM human_requests WHERE mac IS NULL",
    )
    .fetch_all(pool)
    .await?;
    for row in &requests {
        let id: String = row.try_get("id")?;
        let strings: [String; 5] = [
            row.try_get("kind")?,
            row.try_get("channel")?,
            row.try_get("payload")?,
            row.try_get("args_hash")?,
            row.try_get("status")?,
        ];
        let answer: Option<String> = row.try_get("answer")?;
        let by: Option<String> = row.try_get("answered_by")?;
        let invocation: Option<String> = row.try_get("invocation")?;
        let seal = RequestFields {
            id: &id,
            pid: row.try_get("pid")?,
            kind: &strings[0],
            channel: &strings[1],
            payload: &strings[2],
            args_hash: &strings[3],
            status: &strings[4],
            answer: answer.as_deref(),
            answered_by: by.as_deref(),
            used: row.try_get::<i64, _>("used")? != 0,
            invocation: invocation.as_deref(),
        }
        .seal(sealer);
        batch.push(
            "UPDATE human_requests SET mac = ? WHERE id = ?",
            vec![seal.into(), id.into()],
        );
    }
    let images =
        sqlx::query("SELECT id, version, manifest, registered_by FROM images WHERE mac IS NULL")
            .fetch_all(pool)
            .await?;
    for row in &images {
        let id: String = row.try_get("id")?;
        let version: String = row.try_get("version")?;
        let manifest: String = row.try_get("manifest")?;
        let seal = image_seal(
            sealer,
            &id,
            &version,
            &manifest,
            row.try_get("registered_by")?,
        );
        batch.push(
            "UPDATE images SET mac = ? WHERE id = ? AND version = ?",
            vec![seal.into(), id.into(), version.into()],
        );
    }
    if batch.is_empty() {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let batch = batch.audit(crate::audit::AuditEntry {
        ts: now,
        actor: "operator".into(),
        action: "integrity.adopt".into(),
        target: "store".into(),
        decision: crate::audit::Decision::Ok,
        capability_refs: vec![],
        correlation_id: None,
        parent_seq: None,
        detail: serde_json::json!({
            "capabilities": caps.len(),
            "human_requests": requests.len(),
            "images": images.len(),
        }),
    });
    store
        .commit(batch)
        .await
        .map_err(super::StoreError::Adopt)?;
    Ok(())
}
