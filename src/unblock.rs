//! The unblock ladder's flags of `session start` (and MCP's `session_start`),
//! checked before any daemon is spawned.

use aluvia_core::api::ApiClient;
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::to_napi;

/// `unblockSteps` and `unblockGeos` as the session daemon takes them.
#[napi(object)]
pub struct BindingUnblockLadder {
    pub unblock_steps: Option<Vec<String>>,
    pub unblock_geos: Option<Vec<String>>,
}

/// `--unblock-steps` and `--unblock-geos` (comma-separated; null when not
/// given) as lists, checked as `blockDetection`'s are (errors name the
/// flags) and the geos against the API's `GET /geos`.
#[napi]
pub async fn unblock_flags(
    api_key: String,
    api_base_url: Option<String>,
    steps: Option<String>,
    geos: Option<String>,
) -> Result<BindingUnblockLadder> {
    let api = ApiClient::new(&api_key, api_base_url.as_deref(), None).map_err(to_napi)?;
    let (unblock_steps, unblock_geos) =
        aluvia_core::client::unblock_flags(&api, steps.as_deref(), geos.as_deref()).await.map_err(to_napi)?;
    Ok(BindingUnblockLadder { unblock_steps, unblock_geos })
}
