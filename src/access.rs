//! What a team may call: model lookup (404) and the team's allow-list (403),
//! and the `GET /v1/models` answers built from the same rules.

use serde::Serialize;

use crate::config::{Deployment, Gateway, Model};
use crate::errors::ApiError;

/// Looks the model up and checks that the team may use it.
pub fn check(gw: &Gateway, team: usize, model_name: &str) -> Result<usize, ApiError> {
    let Some(team) = gw.teams.get(team) else {
        return Err(ApiError::unauthenticated("Unknown team."));
    };
    let Some(model) = gw.model_by_name(model_name) else {
        return Err(ApiError::model_not_found(format!(
            "The model \"{model_name}\" does not exist on this gateway. GET /v1/models lists the models your key may use."
        )));
    };
    if !team.may_use(model) {
        let allowed = allowed_names(gw, team.allowed.as_slice());
        let may_use = if allowed.is_empty() {
            "It may use no models".to_string()
        } else {
            format!("It may use: {}", allowed.join(", "))
        };
        return Err(ApiError::model_not_allowed(format!(
            "Team \"{}\" may not use the model \"{model_name}\". {may_use}. Ask your platform team to add the model to the team's models in user_access.",
            team.id
        )));
    }
    Ok(model)
}

fn allowed_names<'a>(gw: &'a Gateway, allowed: &[bool]) -> Vec<&'a str> {
    gw.models
        .iter()
        .zip(allowed)
        .filter(|(_, ok)| **ok)
        .map(|(m, _)| m.name.as_str())
        .collect()
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

fn model_object<'a>(model: &'a Model, deployments: &[Deployment]) -> ModelObject<'a> {
    let owned_by = model
        .deployments
        .first()
        .and_then(|d| deployments.get(*d))
        .map_or("tollgate", |d| d.provider.name());
    ModelObject { id: &model.name, object: "model", created: 0, owned_by }
}

/// The `GET /v1/models` body for a team, in OpenAI's list format. Built once
/// per team when the config is loaded.
pub fn models_list_body(models: &[Model], deployments: &[Deployment], allowed: &[bool]) -> String {
    let data = models
        .iter()
        .zip(allowed)
        .filter(|(_, ok)| **ok)
        .map(|(m, _)| model_object(m, deployments))
        .collect();
    serde_json::to_string(&ModelList { object: "list", data }).unwrap_or_default()
}

/// The `GET /v1/models/{model}` body, if the team may see that model.
pub fn model_body(gw: &Gateway, team: usize, model_name: &str) -> Result<String, ApiError> {
    let model = check(gw, team, model_name).map_err(|e| {
        // A model the team may not use is, to that team, a model that does not exist.
        if e.status == 403 {
            ApiError::model_not_found(format!(
                "The model \"{model_name}\" does not exist or your team may not use it. GET /v1/models lists the models your key may use."
            ))
        } else {
            e
        }
    })?;
    let model = gw.models.get(model).ok_or_else(|| ApiError::model_not_found("unknown model"))?;
    Ok(serde_json::to_string(&model_object(model, &gw.deployments)).unwrap_or_default())
}
