//! Object memory primitives. Objects live in namespaces; a process owns `proc/<pid>`.
//! Knowing an object's id or name grants nothing: every use re-checks `object:<id>` or
//! `namespace:<ns>`, and an object the caller may not see is reported as denied whether or
//! not it exists.

use serde_json::{json, Value};
use sqlx::Row;

use super::capability::{Decision, Pid, Right};
use super::error::{SysResult, SyscallError};
use super::fs_calls::write_context;
use super::persist;
use super::process::own_namespace;
use super::resource;
use super::scope::{Done, Scope};
use super::syscall::{MemCall, ObjectSpec, Primitive};
use super::Kernel;
use crate::store::WriteBatch;

/// Largest payload (serialized JSON) an object may hold.
const MAX_PAYLOAD_BYTES: usize = 16 << 20;

impl Kernel {
    pub(crate) async fn mem_call(
        &self,
        pid: Pid,
        call: &MemCall,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        match call {
            MemCall::CreateNamespace { name } => {
                check_namespace_name(name)?;
                self.authorize_one(
                    pid,
                    resource::exact("namespace", name),
                    Right::Create,
                    call,
                    scope,
                )
                .await?;
                let mut batch = WriteBatch::default();
                persist::insert_namespace(&mut batch, name, Some(pid), self.now());
                if self.namespace_exists(name).await? {
                    return Err(SyscallError::AlreadyExists(format!("namespace {name}")));
                }
                Ok(Done::new(json!({"namespace": name}), format!("namespace:{name}")).batch(batch))
            }
            MemCall::List { namespace } => {
                let ns = namespace.clone().unwrap_or_else(|| own_namespace(pid));
                self.authorize_one(
                    pid,
                    resource::exact("namespace", &ns),
                    Right::Read,
                    call,
                    scope,
                )
                .await?;
                let rows = sqlx::query(
                    "SELECT id, name, type, title, summary, tags, mime, appendable, created_by, created_at \
                     FROM objects WHERE namespace = ? ORDER BY created_at, id",
                )
                .bind(&ns)
                .fetch_all(self.inner.store.pool())
                .await?;
                let mut list = Vec::with_capacity(rows.len());
                for row in &rows {
                    // A header (title, summary, tags) is the object's own: it shows only if
                    // the caller may read that object.
                    let id: String = row.try_get("id")?;
                    let names = [
                        resource::exact("object", &id),
                        resource::exact("namespace", &ns),
                    ];
                    if self.visible(pid, &names, Right::Read, scope) {
                        list.push(header_json(row, &ns)?);
                    }
                }
                let count = list.len();
                Ok(Done::new(json!(list), format!("namespace:{ns}"))
                    .detail(json!({"objects": count})))
            }
            MemCall::Create(spec) => {
                refuse_reserved_type(&spec.object_type)?;
                self.create_object(pid, spec, call, scope).await
            }
            MemCall::Read { id } => {
                let ns = self
                    .object_namespace(pid, id, Right::Read, call, scope)
                    .await?;
                let object = self.load_object(id, &ns).await?;
                Ok(Done::new(object, format!("object:{id}")))
            }
            MemCall::Find { namespace, name } => {
                let ns = namespace.clone().unwrap_or_else(|| own_namespace(pid));
                let ns_resource = resource::exact("namespace", &ns);
                let id: Option<String> =
                    sqlx::query_scalar("SELECT id FROM objects WHERE namespace = ? AND name = ?")
                        .bind(&ns)
                        .bind(name)
                        .fetch_optional(self.inner.store.pool())
                        .await?;
                let may_list = matches!(
                    self.peek(pid, std::slice::from_ref(&ns_resource), Right::Read),
                    Decision::Matched(_)
                );
                let Some(id) = id.filter(|_| may_list) else {
                    // Without read on the namespace the name reveals nothing, found or not.
                    self.authorize_one(pid, ns_resource, Right::Read, call, scope)
                        .await?;
                    return Err(SyscallError::NotFound(format!("object '{name}' in {ns}")));
                };
                // Finding by name is reading: the object's own capability decides, as for
                // `mem.read`.
                self.authorize(
                    pid,
                    &[resource::exact("object", &id), ns_resource],
                    Right::Read,
                    call,
                    scope,
                    || Ok(json!({"object": id, "name": name})),
                )
                .await?;
                let object = self.load_object(&id, &ns).await?;
                Ok(Done::new(object, format!("object:{id}")))
            }
            MemCall::Append { id, item } => {
                let ns = self
                    .object_namespace(pid, id, Right::Append, call, scope)
                    .await?;
                let appendable: bool =
                    sqlx::query_scalar("SELECT appendable FROM objects WHERE id = ?")
                        .bind(id)
                        .fetch_one(self.inner.store.pool())
                        .await?;
                if !appendable {
                    return Err(SyscallError::invalid(format!(
                        "object {id} is immutable (created without appendable)"
                    )));
                }
                let item_text = item.to_string();
                if item_text.len() > MAX_PAYLOAD_BYTES {
                    return Err(SyscallError::limit(
                        "payload_size",
                        format!(
                            "item is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                            item_text.len()
                        ),
                    ));
                }
                let batch = WriteBatch::default().stmt(
                    "INSERT INTO object_items (object_id, seq, item) \
                     SELECT ?, COALESCE(MAX(seq), 0) + 1, ? FROM object_items WHERE object_id = ?",
                    vec![id.clone().into(), item_text.into(), id.clone().into()],
                );
                Ok(
                    Done::new(json!({"id": id, "namespace": ns}), format!("object:{id}"))
                        .batch(batch),
                )
            }
            MemCall::FromFile {
                path,
                namespace,
                name,
                object_type,
            } => {
                refuse_reserved_type(object_type)?;
                let p = self
                    .authorize_path(pid, path, Right::Read, call, scope, |_| Ok(Value::Null))
                    .await?;
                let bytes = self.read_file(pid, &p).await?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| SyscallError::invalid(format!("{} is not UTF-8 text", p.rel())))?;
                let spec = ObjectSpec {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    object_type: object_type.clone(),
                    payload: Value::String(text),
                    title: Some(p.rel().to_string()),
                    mime: Some("text/plain".into()),
                    ..ObjectSpec::default()
                };
                self.create_object(pid, &spec, call, scope).await
            }
            MemCall::ToFile {
                id,
                path,
                overwrite,
            } => {
                let ns = self
                    .object_namespace(pid, id, Right::Read, call, scope)
                    .await?;
                let object = self.load_object(id, &ns).await?;
                let content = match &object["payload"] {
                    Value::String(s) => s.clone(),
                    other => serde_json::to_string_pretty(other).unwrap_or_default(),
                };
                self.check_fs_bytes(pid, "the object's content", content.len() as u64)?;
                let fs = self.providers().fs.clone();
                let p = self
                    .authorize_path(pid, path, Right::Write, call, scope, |p| {
                        write_context(
                            fs.as_ref(),
                            p,
                            &content,
                            *overwrite,
                            json!({"from_object": id}),
                        )
                    })
                    .await?;
                self.intent_point(call, scope).await?;
                let replaced = self.write_file(pid, &p, &content, *overwrite).await?;
                Ok(Done::new(
                    json!({
                        "path": p.rel(),
                        "bytes": content.len(),
                        "sha256": crate::util::sha256_hex(content.as_bytes()),
                        "overwritten": replaced,
                    }),
                    p.resource(),
                ))
            }
        }
    }

    /// Creates an object of any type, reserved ones included: `mem.create` and
    /// `mem.from_file` check the type first, and the kernel's own objects come through here.
    pub(super) async fn create_object(
        &self,
        pid: Pid,
        spec: &ObjectSpec,
        call: &dyn Primitive,
        scope: &mut Scope,
    ) -> SysResult<Done> {
        let ns = spec.namespace.clone().unwrap_or_else(|| own_namespace(pid));
        self.authorize_one(
            pid,
            resource::exact("namespace", &ns),
            Right::Create,
            call,
            scope,
        )
        .await?;
        if spec.object_type.is_empty() {
            return Err(SyscallError::invalid("object type must not be empty"));
        }
        let payload = spec.payload.to_string();
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(SyscallError::limit(
                "payload_size",
                format!(
                    "payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                    payload.len()
                ),
            ));
        }
        if !self.namespace_exists(&ns).await? {
            return Err(SyscallError::NotFound(format!("namespace {ns}")));
        }
        if let Some(name) = &spec.name {
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM objects WHERE namespace = ? AND name = ?")
                    .bind(&ns)
                    .bind(name)
                    .fetch_optional(self.inner.store.pool())
                    .await?;
            if taken.is_some() {
                return Err(SyscallError::AlreadyExists(format!(
                    "object '{name}' in {ns}"
                )));
            }
        }
        let id = crate::util::new_id("obj");
        let batch = WriteBatch::default().stmt(
            "INSERT INTO objects (id, namespace, name, type, title, summary, tags, mime, payload, \
             appendable, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                id.clone().into(),
                ns.clone().into(),
                spec.name.clone().into(),
                spec.object_type.clone().into(),
                spec.title.clone().into(),
                spec.summary.clone().into(),
                persist::json(&spec.tags).into(),
                spec.mime.clone().into(),
                payload.into(),
                spec.appendable.into(),
                pid.into(),
                self.now().into(),
            ],
        );
        Ok(Done::new(
            json!({"id": id, "namespace": ns, "name": spec.name}),
            format!("object:{id}"),
        )
        .detail(json!({"id": id, "type": spec.object_type}))
        .batch(batch))
    }

    /// Authorizes `right` on an object by id (`object:<id>`, then its namespace) and returns
    /// its namespace. A missing object is reported as denied unless the caller holds a
    /// capability naming that exact id.
    async fn object_namespace(
        &self,
        pid: Pid,
        id: &str,
        right: Right,
        call: &dyn Primitive,
        scope: &mut Scope,
    ) -> SysResult<String> {
        let ns: Option<String> = sqlx::query_scalar("SELECT namespace FROM objects WHERE id = ?")
            .bind(id)
            .fetch_optional(self.inner.store.pool())
            .await?;
        let Some(ns) = ns else {
            self.authorize_one(pid, resource::exact("object", id), right, call, scope)
                .await?;
            return Err(SyscallError::NotFound(format!("object {id}")));
        };
        self.authorize(
            pid,
            &[
                resource::exact("object", id),
                resource::exact("namespace", &ns),
            ],
            right,
            call,
            scope,
            || Ok(json!({"object": id})),
        )
        .await?;
        Ok(ns)
    }

    async fn namespace_exists(&self, ns: &str) -> SysResult<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT name FROM namespaces WHERE name = ?")
                .bind(ns)
                .fetch_optional(self.inner.store.pool())
                .await?;
        Ok(found.is_some())
    }

    async fn load_object(&self, id: &str, ns: &str) -> SysResult<Value> {
        let row = sqlx::query(
            "SELECT id, name, type, title, summary, tags, mime, appendable, created_by, created_at, payload \
             FROM objects WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(self.inner.store.pool())
        .await?
        .ok_or_else(|| SyscallError::NotFound(format!("object {id}")))?;
        let mut object = header_json(&row, ns)?;
        let payload: String = row.try_get("payload")?;
        object["payload"] = serde_json::from_str(&payload).unwrap_or(Value::Null);
        if object["appendable"] == json!(true) {
            let items: Vec<String> = sqlx::query_scalar(
                "SELECT item FROM object_items WHERE object_id = ? ORDER BY seq",
            )
            .bind(id)
            .fetch_all(self.inner.store.pool())
            .await?;
            object["items"] = Value::Array(
                items
                    .iter()
                    .map(|i| serde_json::from_str(i).unwrap_or(Value::Null))
                    .collect(),
            );
        }
        Ok(object)
    }
}

fn header_json(row: &sqlx::sqlite::SqliteRow, ns: &str) -> SysResult<Value> {
    let tags: String = row.try_get("tags")?;
    Ok(json!({
        "id": row.try_get::<String, _>("id")?,
        "namespace": ns,
        "name": row.try_get::<Option<String>, _>("name")?,
        "type": row.try_get::<String, _>("type")?,
        "title": row.try_get::<Option<String>, _>("title")?,
        "summary": row.try_get::<Option<String>, _>("summary")?,
        "tags": serde_json::from_str::<Value>(&tags).unwrap_or(json!([])),
        "mime": row.try_get::<Option<String>, _>("mime")?,
        "appendable": row.try_get::<bool, _>("appendable")?,
        "created_by": row.try_get::<Option<i64>, _>("created_by")?,
        "created_at": row.try_get::<i64, _>("created_at")?,
    }))
}

/// Object types only the kernel creates: a `tool.candidate` is what `tool.propose` stored.
const RESERVED_TYPES: &[&str] = &["tool.candidate"];

fn refuse_reserved_type(object_type: &str) -> SysResult<()> {
    if RESERVED_TYPES.contains(&object_type) {
        return Err(SyscallError::invalid(format!(
            "object type {object_type} is reserved for the kernel; propose a tool with tool.propose"
        )));
    }
    Ok(())
}

fn check_namespace_name(name: &str) -> SysResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.contains("//")
        && !name.contains('*')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SyscallError::invalid(format!(
            "namespace '{name}' must be letters, digits, '-', '_', '.', '/'-separated, without wildcards"
        )))
    }
}
