//! Rule checks and edits for the CLI's `session set-rules`: the same locked
//! read-modify-write as auto-unblock (`aluvia_core::rules_edit`), so that
//! neither undoes the other.

use aluvia_core::api::ApiClient;
use aluvia_core::rules::validate_rules as validate;
use aluvia_core::rules_edit::{edit_connection_rules, RulesEdit};
use aluvia_core::store::LockDir;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::to_napi;

/// Throws the engine's error for rules that no connection may hold (a
/// control character in one), so that a command can refuse them before it
/// looks for its session.
#[napi]
pub fn validate_rules(rules: Vec<String>) -> Result<()> {
    validate(&rules).map_err(to_napi)
}

/// Removes `remove` from the rules of connection `connectionId`, then
/// appends `add` (deduplicated, order kept), under the connection's lock in
/// the session lock directory; PATCHes only when that changes them. Resolves
/// to the rules now on the connection.
#[napi]
pub async fn connection_rules_edit(
    api_key: String,
    api_base_url: Option<String>,
    connection_id: String,
    add: Vec<String>,
    remove: Vec<String>,
) -> Result<Vec<String>> {
    let api = ApiClient::new(&api_key, api_base_url.as_deref(), None).map_err(to_napi)?;
    let locks = LockDir::open_default_async().await.map_err(to_napi)?;
    let edited = edit_connection_rules(&api, Some(&locks), &connection_id, &RulesEdit::new(add, remove))
        .await
        .map_err(to_napi)?;
    Ok(edited.rules)
}
