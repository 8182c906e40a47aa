//! Discovery (RFC 7644 section 4): /ServiceProviderConfig, /ResourceTypes
//! and /Schemas, describing exactly what rollcall supports, no more.

use projections::directory::schema::{
    Attribute, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA, Schema, USER_SCHEMA, enterprise_user_schema,
    group_schema, user_schema,
};
use serde_json::{Map, Value, json};

use super::render::BaseUrl;
use crate::state::ServerConfig;

/// Resources returned by one list or search page at most (advertised as
/// `filter.maxResults`).
pub const PAGE_SIZE_MAX: u64 = 1000;
/// Resources returned when the client does not say `count`.
pub const PAGE_SIZE_DEFAULT: u64 = 100;

const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// The body limit is advertised as Bulk's `maxPayloadSize`: no request
/// body larger than that is read (413).
pub fn service_provider_config(base: &BaseUrl, config: &ServerConfig) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/rollcall/rollcall#readme",
        "patch": {"supported": true},
        "bulk": {
            "supported": true,
            "maxOperations": config.bulk_operations_max,
            "maxPayloadSize": config.body_limit_bytes
        },
        "filter": {"supported": true, "maxResults": PAGE_SIZE_MAX},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "A per-tenant bearer token issued with `rollcall token issue --scope scim`.",
            "primary": true
        }, {
            "type": "oauth2",
            "name": "OAuth 2.0 client credentials",
            "description": "POST /oauth/token with grant_type=client_credentials and a client made with `rollcall client create`; the access token is a bearer token.",
            "specUri": "https://www.rfc-editor.org/info/rfc6749"
        }],
        "meta": {
            "resourceType": "ServiceProviderConfig",
            "location": format!("{}/ServiceProviderConfig", base.0)
        }
    })
}

pub fn resource_type(base: &BaseUrl, name: &str) -> Option<Value> {
    let (endpoint, schema, description, extensions) = match name {
        name if name.eq_ignore_ascii_case("User") => (
            "/Users",
            USER_SCHEMA,
            "User Account",
            vec![json!({"schema": ENTERPRISE_USER_SCHEMA, "required": false})],
        ),
        name if name.eq_ignore_ascii_case("Group") => {
            ("/Groups", GROUP_SCHEMA, "Group", Vec::new())
        }
        _ => return None,
    };
    let id = if endpoint == "/Users" { "User" } else { "Group" };
    let mut resource_type = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": id,
        "name": id,
        "endpoint": endpoint,
        "description": description,
        "schema": schema,
        "meta": {"resourceType": "ResourceType", "location": format!("{}/ResourceTypes/{id}", base.0)}
    });
    if !extensions.is_empty()
        && let Some(fields) = resource_type.as_object_mut()
    {
        fields.insert("schemaExtensions".to_owned(), Value::Array(extensions));
    }
    Some(resource_type)
}

pub fn resource_types(base: &BaseUrl) -> Value {
    let items: Vec<Value> =
        ["User", "Group"].iter().filter_map(|name| resource_type(base, name)).collect();
    list_response(items)
}

fn schemas() -> [&'static Schema; 3] {
    [user_schema(), enterprise_user_schema(), group_schema()]
}

pub fn schema(base: &BaseUrl, id: &str) -> Option<Value> {
    schemas()
        .iter()
        .find(|schema| schema.id.eq_ignore_ascii_case(id))
        .map(|schema| schema_json(base, schema))
}

pub fn all_schemas(base: &BaseUrl) -> Value {
    list_response(schemas().iter().map(|schema| schema_json(base, schema)).collect())
}

fn schema_json(base: &BaseUrl, schema: &Schema) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"],
        "id": schema.id,
        "name": schema.name,
        "description": schema.description,
        "attributes": schema.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{}/Schemas/{}", base.0, schema.id)}
    })
}

fn attribute_json(attribute: &Attribute) -> Value {
    let mut value = json!({
        "name": attribute.name,
        "type": attribute.kind.as_str(),
        "multiValued": attribute.multi_valued,
        "description": attribute.description,
        "required": attribute.required,
        "caseExact": attribute.case_exact,
        "mutability": attribute.mutability.as_str(),
        "returned": attribute.returned.as_str(),
        "uniqueness": attribute.uniqueness.as_str(),
    });
    if let Some(fields) = value.as_object_mut() {
        if !attribute.canonical_values.is_empty() {
            fields.insert("canonicalValues".to_owned(), json!(attribute.canonical_values));
        }
        if !attribute.reference_types.is_empty() {
            fields.insert("referenceTypes".to_owned(), json!(attribute.reference_types));
        }
        if !attribute.sub_attributes.is_empty() {
            let subs: Vec<Value> = attribute.sub_attributes.iter().map(attribute_json).collect();
            fields.insert("subAttributes".to_owned(), Value::Array(subs));
        }
    }
    value
}

/// A ListResponse holding all of `items`.
pub fn list_response(items: Vec<Value>) -> Value {
    let total = u64::try_from(items.len()).unwrap_or(u64::MAX);
    list_page(total, 1, items)
}

/// A ListResponse page.
pub fn list_page(total: u64, start_index: u64, items: Vec<Value>) -> Value {
    // Built by hand: `json!` would serialise `items` into a copy of itself.
    let mut page = Map::new();
    page.insert("schemas".to_owned(), json!([LIST_RESPONSE]));
    page.insert("totalResults".to_owned(), Value::from(total));
    page.insert("startIndex".to_owned(), Value::from(start_index));
    page.insert("itemsPerPage".to_owned(), Value::from(items.len()));
    page.insert("Resources".to_owned(), Value::Array(items));
    Value::Object(page)
}
