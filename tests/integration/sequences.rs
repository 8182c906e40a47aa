//! Whole provisioning sequences replayed request by request, the way real
//! identity providers send them, each asserting statuses and the parts of
//! bodies the identity provider reads back. Every test names the public
//! document its sequence is shaped after; the values are our own.
//!
//! The last tests guard the bugs other SCIM servers' trackers keep showing
//! (a path-less replace silently ignored, a rename emptying a group, pages
//! cut at 100, a deactivated user blocking provisioning, another tenant's
//! objects visible), one sequence each.

use std::collections::BTreeSet;

use events::event::TokenScope;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::util::TestServer;

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const LIST_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
/// The schema Entra ID lists beside the core one when it creates a group.
const ENTRA_GROUP: &str =
    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

/// One identity provider's connection: a tenant's token, the User-Agent it
/// announces and the Content-Type it sends bodies with.
struct Idp<'s> {
    server: &'s TestServer,
    token: String,
    user_agent: &'static str,
    content_type: &'static str,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Idp<'_> {
    async fn connect<'s>(
        server: &'s TestServer,
        tenant: &str,
        user_agent: &'static str,
    ) -> Idp<'s> {
        server.tenant(tenant).await;
        let (_, token) = server.token(tenant, TokenScope::Scim).await;
        Idp { server, token, user_agent, content_type: "application/scim+json" }
    }

    /// `path` is relative to `/scim/v2` and may carry a query string written
    /// as the identity provider writes it (spaces and quotes included; the
    /// URL parser percent-encodes them as a client library does).
    async fn send_as(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> Answer {
        let mut request = self
            .server
            .client
            .request(method, self.server.url(&format!("/scim/v2{path}")))
            .bearer_auth(&self.token)
            .header("user-agent", self.user_agent);
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}"))
        };
        if !body.is_null() {
            assert_eq!(headers["content-type"], "application/scim+json", "{path}");
        }
        Answer { status, headers, body }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send_as(method, path, body, self.content_type).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.send(Method::PUT, path, Some(body)).await
    }

    async fn patch(&self, path: &str, operations: Value) -> Answer {
        let body = json!({"schemas": [PATCH_OP], "Operations": operations});
        self.send(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    /// POSTs `body` and insists on 201; returns the new resource.
    async fn created(&self, path: &str, body: Value) -> Value {
        let answer = self.post(path, body).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        answer.body
    }

    /// Creates `count` users named `{prefix}{n:04}`, many requests in
    /// flight at once (as an identity provider's initial cycle does);
    /// returns their ids in the order of `n`.
    async fn create_users(&self, prefix: &str, count: usize) -> Vec<String> {
        const IN_FLIGHT_MAX: usize = 50;
        let url = self.server.url("/scim/v2/Users");
        let mut ids = Vec::with_capacity(count);
        let mut next = 0;
        while next < count {
            let batch: Vec<_> = (next..count.min(next + IN_FLIGHT_MAX))
                .map(|n| {
                    let request = self
                        .server
                        .client
                        .post(&url)
                        .bearer_auth(&self.token)
                        .header("content-type", "application/scim+json")
                        .body(
                            json!({"schemas": [USER], "userName": format!("{prefix}{n:04}")})
                                .to_string(),
                        );
                    tokio::spawn(async move {
                        let response = request.send().await.unwrap();
                        assert_eq!(response.status(), 201);
                        let body: Value = response.json().await.unwrap();
                        body["id"].as_str().unwrap().to_owned()
                    })
                })
                .collect();
            for task in batch {
                ids.push(task.await.unwrap());
            }
            next = ids.len();
        }
        ids
    }
}

fn id_of(resource: &Value) -> String {
    resource["id"].as_str().unwrap_or_else(|| panic!("no id in {resource}")).to_owned()
}

/// A resource without what the server chose (id, meta).
fn without_server_fields(mut body: Value) -> Value {
    if let Some(fields) = body.as_object_mut() {
        fields.remove("id");
        fields.remove("meta");
    }
    body
}

/// The ids of a ListResponse's resources, in order.
fn listed_ids(list: &Value) -> Vec<String> {
    list["Resources"].as_array().unwrap().iter().map(id_of).collect()
}

/// A group's member ids (none when `members` is absent).
fn member_ids(group: &Value) -> BTreeSet<String> {
    group
        .get("members")
        .and_then(Value::as_array)
        .map(|members| {
            members.iter().map(|member| member["value"].as_str().unwrap().to_owned()).collect()
        })
        .unwrap_or_default()
}

/// A group answer whose members are exactly `expected`; a mismatch names
/// the ids missing and the ids too many, not two sets of a thousand.
fn assert_members(answer: &Answer, expected: &BTreeSet<String>, context: &str) {
    assert_eq!(answer.status, 200, "{context}: {}", answer.body);
    let actual = member_ids(&answer.body);
    let missing: Vec<&String> = expected.difference(&actual).collect();
    let extra: Vec<&String> = actual.difference(expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{context}: missing {missing:?}, extra {extra:?}"
    );
}

/// An RFC 7644 section 3.12 error with this status.
fn assert_error(answer: &Answer, status: u16, scim_type: Option<&str>) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.body["schemas"], json!([ERROR]), "{}", answer.body);
    assert_eq!(answer.body["status"], status.to_string(), "{}", answer.body);
    assert_eq!(answer.body.get("scimType").and_then(Value::as_str), scim_type, "{}", answer.body);
    assert!(answer.body["detail"].as_str().is_some_and(|detail| !detail.is_empty()));
}

/// A list with exactly these resources (by id), on one page from 1.
fn assert_listed<S: AsRef<str>>(answer: &Answer, ids: &[S]) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["schemas"], json!([LIST_RESPONSE]));
    assert_eq!(answer.body["totalResults"], ids.len(), "{}", answer.body);
    assert_eq!(answer.body["itemsPerPage"], ids.len(), "{}", answer.body);
    assert_eq!(answer.body["startIndex"], 1);
    let expected: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    assert_eq!(listed_ids(&answer.body), expected);
}

/// The empty ListResponse Test Connection expects.
fn assert_empty_list(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"schemas": [LIST_RESPONSE], "totalResults": 0, "startIndex": 1, "itemsPerPage": 0, "Resources": []})
    );
}

async fn event_types(server: &TestServer, tenant_id: &str, stream: &str) -> Vec<String> {
    server
        .store
        .log()
        .read_stream(tenant_id, stream)
        .unwrap()
        .into_iter()
        .map(|event| event.event_type)
        .collect()
}

/// Microsoft Entra ID provisioning one user from Test Connection to its
/// deletion and return, in both PATCH dialects (the default one, and the
/// SCIM-compliant one of the `aadOptscim062020` flag).
///
/// Sources: "Tutorial: Develop and plan provisioning for a SCIM endpoint in
/// Microsoft Entra ID",
/// <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups>
/// (Test Connection, Create User, Get User, Get User by query, Update User,
/// Disable User, Delete User; the unquoted `externalId eq jyoung` match),
/// and "Known issues and resolutions with SCIM 2.0 protocol compliance of
/// the Microsoft Entra user provisioning service",
/// <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/application-provisioning-config-problem-scim-compatibility>
/// (each request with and without the flag).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_provisions_a_user_from_test_connection_to_deletion_and_back() {
    let server = TestServer::start().await;
    let entra = Idp::connect(&server, "contoso", "Azure Active Directory SCIM Client").await;

    // Test Connection: a random GUID on the matching attribute of each
    // resource type; 200 with an empty ListResponse.
    let guid = "5b3c8e14-7d2a-4f0b-9e61-2c4d8a7f1e93";
    assert_empty_list(&entra.get(&format!("/Users?filter=userName eq \"{guid}\"")).await);
    assert_empty_list(&entra.get(&format!("/Groups?filter=displayName eq \"{guid}\"")).await);

    // Matching before creating: by externalId (the objectId), unquoted.
    let object_id = "c7e0b5d2-41a9-4e3f-8b06-93d1f2a4c5e8";
    let user_name = "Test_User_9e2f4a61-3b7c-4d85-a0e9-6f1c2b8d4a73";
    let work_email = "Test_User_1a4d7e2b-8c5f-4b93-9d60-e2f7a1c3b5d8@testuser.example";
    assert_empty_list(&entra.get(&format!("/Users?filter=externalId eq {object_id}")).await);

    // Create User, with the enterprise extension and an empty roles list.
    let created = entra
        .post(
            "/Users",
            json!({
                "schemas": [USER, ENTERPRISE],
                "externalId": object_id,
                "userName": user_name,
                "active": true,
                "emails": [{"primary": true, "type": "work", "value": work_email}],
                "meta": {"resourceType": "User"},
                "name": {"formatted": "Ada Lovelace", "familyName": "Lovelace", "givenName": "Ada"},
                "roles": [],
                ENTERPRISE: {"employeeNumber": "1815", "department": "Analytical Engines"}
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = id_of(&created.body);
    let path = format!("/Users/{id}");
    assert_eq!(created.headers["location"], format!("{}/scim/v2{path}", server.base).as_str());
    assert_eq!(created.body["meta"]["resourceType"], "User");
    assert_eq!(
        without_server_fields(created.body.clone()),
        json!({
            "schemas": [USER, ENTERPRISE],
            "externalId": object_id,
            "userName": user_name,
            "active": true,
            "emails": [{"primary": true, "type": "work", "value": work_email}],
            "name": {"formatted": "Ada Lovelace", "familyName": "Lovelace", "givenName": "Ada"},
            ENTERPRISE: {"employeeNumber": "1815", "department": "Analytical Engines"}
        }),
        "an empty roles list is no roles"
    );

    // Get User.
    let fetched = entra.get(&path).await;
    assert_eq!((fetched.status, &fetched.body), (200, &created.body));

    // Get User by query: every form Entra ID matches with.
    for filter in [
        format!("externalId eq \"{object_id}\""),
        format!("externalId eq {object_id}"),
        format!("userName eq \"{user_name}\""),
        format!("userName eq {user_name}"),
        format!("userName eq \"{}\"", user_name.to_uppercase()),
        format!("emails[type eq \"work\"].value eq \"{work_email}\""),
    ] {
        let found = entra.get(&format!("/Users?filter={filter}")).await;
        assert_listed(&found, &[&id]);
        assert_eq!(found.body["Resources"][0], created.body, "{filter}");
    }

    // Another user, shaped as the tutorial's "Provision a user" example:
    // attributes Entra ID has no value for come as null, and the extension
    // URN in `schemas` lacks its colon. Nulls are absent values.
    assert_empty_list(&entra.get("/Users?filter=externalId eq mrivera-4c1e").await);
    let young = entra
        .post(
            "/Users",
            json!({
                "schemas": [USER, "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
                "externalId": "mrivera-4c1e",
                "userName": "mrivera@testuser.example",
                "active": true,
                "addresses": null,
                "displayName": "Maria Rivera",
                "emails": [{"type": "work", "value": "maria.rivera@contoso.example", "primary": true}],
                "meta": {"resourceType": "User"},
                "name": {"familyName": "Rivera", "givenName": "Maria"},
                "phoneNumbers": null,
                "preferredLanguage": null,
                "title": null,
                "department": null,
                "manager": null
            }),
        )
        .await;
    assert_eq!(young.status, 201, "{}", young.body);
    assert_eq!(
        without_server_fields(young.body.clone()),
        json!({
            "schemas": [USER],
            "externalId": "mrivera-4c1e",
            "userName": "mrivera@testuser.example",
            "active": true,
            "displayName": "Maria Rivera",
            "emails": [{"type": "work", "value": "maria.rivera@contoso.example", "primary": true}],
            "name": {"familyName": "Rivera", "givenName": "Maria"}
        })
    );
    assert_listed(
        &entra.get("/Users?filter=externalId eq mrivera-4c1e").await,
        &[&id_of(&young.body)],
    );

    // The manager is provisioned too; Entra ID had no mail for them.
    let manager = entra
        .created(
            "/Users",
            json!({"schemas": [USER], "externalId": "0d9f3c27-6b1e-4a58-b7c4-1e8a2f5d9c30",
                   "userName": "Test_User_manager-4f1d", "active": true,
                   "name": {"familyName": "Babbage", "givenName": "Charles"}}),
        )
        .await;
    let manager_id = id_of(&manager);
    assert!(manager.get("emails").is_none());
    // Entra ID then sets the work email through its filtered path: the
    // element is created, typed by the filter.
    let manager_email = "charles.babbage@testuser.example";
    let answer = entra
        .patch(
            &format!("/Users/{manager_id}"),
            json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": manager_email}]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["emails"], json!([{"type": "work", "value": manager_email}]));
    assert_listed(
        &entra
            .get(&format!("/Users?filter=emails[type eq \"work\"].value eq \"{manager_email}\""))
            .await,
        &[&manager_id],
    );

    // Replacing several attributes, default dialect: one operation each,
    // capitalised, with a URN-qualified path.
    let new_object_id = "e4b82d1f-97c3-4a6e-8f25-0b3d6c9a1e47";
    let answer = entra
        .patch(
            &path,
            json!([
                {"op": "Replace", "path": "displayName", "value": "Ada King"},
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ada.king@testuser.example"},
                {"op": "Replace", "path": "name.givenName", "value": "Augusta Ada"},
                {"op": "Replace", "path": "name.familyName", "value": "King"},
                {"op": "Replace", "path": "externalId", "value": new_object_id},
                {"op": "Replace", "path": format!("{ENTERPRISE}:employeeNumber"), "value": "1835"}
            ]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        without_server_fields(answer.body.clone()),
        json!({
            "schemas": [USER, ENTERPRISE],
            "externalId": new_object_id,
            "userName": user_name,
            "displayName": "Ada King",
            "active": true,
            "emails": [{"primary": true, "type": "work", "value": "ada.king@testuser.example"}],
            "name": {"formatted": "Ada Lovelace", "familyName": "King", "givenName": "Augusta Ada"},
            ENTERPRISE: {"employeeNumber": "1835", "department": "Analytical Engines"}
        })
    );
    assert_listed(
        &entra.get(&format!("/Users?filter=externalId eq {new_object_id}")).await,
        &[&id],
    );
    assert_empty_list(&entra.get(&format!("/Users?filter=externalId eq {object_id}")).await);

    // Adding a single-valued string, in both dialects.
    let answer =
        entra.patch(&path, json!([{"op": "Add", "path": "nickName", "value": "Ada"}])).await;
    assert_eq!((answer.status, &answer.body["nickName"]), (200, &json!("Ada")));
    let answer = entra
        .patch(&path, json!([{"op": "add", "path": "nickName", "value": "Enchantress"}]))
        .await;
    assert_eq!((answer.status, &answer.body["nickName"]), (200, &json!("Enchantress")));

    // Replacing several attributes with the flag: the filtered path, then
    // one path-less replace whose keys are dotted and URN-qualified paths.
    let answer = entra
        .patch(
            &path,
            json!([
                {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "countess@testuser.example"},
                {"op": "replace", "value": {
                    "displayName": "Countess of Lovelace",
                    "name.givenName": "Ada",
                    "name.familyName": "Lovelace",
                    format!("{ENTERPRISE}:employeeNumber"): "1843"
                }}
            ]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        without_server_fields(answer.body.clone()),
        json!({
            "schemas": [USER, ENTERPRISE],
            "externalId": new_object_id,
            "userName": user_name,
            "displayName": "Countess of Lovelace",
            "nickName": "Enchantress",
            "active": true,
            "emails": [{"primary": true, "type": "work", "value": "countess@testuser.example"}],
            "name": {"formatted": "Ada Lovelace", "familyName": "Lovelace", "givenName": "Ada"},
            ENTERPRISE: {"employeeNumber": "1843", "department": "Analytical Engines"}
        }),
        "the dotted and URN keys changed their attributes and nothing else"
    );

    // The manager: a bare id, cleared with an empty value, then an object.
    let manager_path = format!("{ENTERPRISE}:manager");
    let answer = entra
        .patch(&path, json!([{"op": "Replace", "path": manager_path, "value": manager_id}]))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body[ENTERPRISE],
        json!({"employeeNumber": "1843", "department": "Analytical Engines", "manager": {"value": manager_id}})
    );
    let answer =
        entra.patch(&path, json!([{"op": "Replace", "path": manager_path, "value": ""}])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body[ENTERPRISE],
        json!({"employeeNumber": "1843", "department": "Analytical Engines"}),
        "an empty value clears the manager alone"
    );
    let answer = entra
        .patch(&path, json!([{"op": "add", "path": manager_path, "value": {"value": manager_id}}]))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body[ENTERPRISE]["manager"], json!({"value": manager_id}));

    // Disable User, default dialect: the boolean as a string. The user is
    // still there, inactive, and still matched.
    let answer =
        entra.patch(&path, json!([{"op": "Replace", "path": "active", "value": "False"}])).await;
    assert_eq!((answer.status, &answer.body["active"]), (200, &json!(false)), "{}", answer.body);
    let fetched = entra.get(&path).await;
    assert_eq!((fetched.status, &fetched.body["active"]), (200, &json!(false)));
    assert_eq!(fetched.body["userName"], user_name);
    assert_listed(&entra.get(&format!("/Users?filter=userName eq \"{user_name}\"")).await, &[&id]);
    // Enabled again, then disabled and enabled with the flag's booleans.
    let answer =
        entra.patch(&path, json!([{"op": "Replace", "path": "active", "value": "True"}])).await;
    assert_eq!((answer.status, &answer.body["active"]), (200, &json!(true)));
    let answer =
        entra.patch(&path, json!([{"op": "Replace", "path": "active", "value": false}])).await;
    assert_eq!((answer.status, &answer.body["active"]), (200, &json!(false)));
    let answer =
        entra.patch(&path, json!([{"op": "replace", "path": "active", "value": true}])).await;
    assert_eq!((answer.status, &answer.body["active"]), (200, &json!(true)));
    assert_eq!(entra.get(&path).await.body["active"], true);

    // Delete User: 204 without a body, then 404 with a SCIM error, twice.
    let deleted = entra.delete(&path).await;
    assert_eq!((deleted.status, &deleted.body), (204, &Value::Null));
    assert_error(&entra.get(&path).await, 404, None);
    assert_error(&entra.delete(&path).await, 404, None);
    assert_empty_list(&entra.get(&format!("/Users?filter=userName eq \"{user_name}\"")).await);
    assert_empty_list(&entra.get(&format!("/Users?filter=externalId eq {new_object_id}")).await);
    assert_eq!(entra.get(&format!("/Users/{manager_id}")).await.status, 200);

    // Assigned again: the same userName and externalId make a new user.
    let again = entra
        .post(
            "/Users",
            json!({"schemas": [USER, ENTERPRISE], "externalId": new_object_id, "userName": user_name,
                   "active": true, "emails": [{"primary": true, "type": "work", "value": work_email}]}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_ne!(id_of(&again.body), id);
    assert_listed(
        &entra.get(&format!("/Users?filter=userName eq \"{user_name}\"")).await,
        &[&id_of(&again.body)],
    );
    server.stop().await.unwrap();
}

/// Microsoft Entra ID setting a user's manager with the request the
/// tutorial shows for it: the path is the short name `manager`, the value a
/// list of one reference. `manager` is no core attribute; it can only be the
/// Enterprise User's, which is what the identity provider means.
///
/// Source: "Tutorial: Develop and plan provisioning for a SCIM endpoint in
/// Microsoft Entra ID" ("Example 5. Request from Microsoft Entra ID to an
/// SCIM endpoint to update a user"),
/// <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups>.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_sets_a_manager_by_its_short_name_as_the_tutorial_shows() {
    let server = TestServer::start().await;
    let entra = Idp::connect(&server, "contoso", "Azure Active Directory SCIM Client").await;
    let id = id_of(
        &entra
            .created("/Users", json!({"schemas": [USER], "userName": "report@contoso.example"}))
            .await,
    );
    let manager_id = id_of(
        &entra
            .created("/Users", json!({"schemas": [USER], "userName": "boss@contoso.example"}))
            .await,
    );
    let reference = format!("{}/scim/v2/Users/{manager_id}", server.base);
    let answer = entra
        .patch(
            &format!("/Users/{id}"),
            json!([{"op": "Add", "path": "manager", "value": [{"$ref": reference, "value": manager_id}]}]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body[ENTERPRISE],
        json!({"manager": {"value": manager_id, "$ref": reference}})
    );
    assert_listed(
        &entra
            .get(&format!(
                "/Users?filter=id eq \"{id}\" and {ENTERPRISE}:manager.value eq \"{manager_id}\""
            ))
            .await,
        &[&id],
    );
    server.stop().await.unwrap();
}

/// Microsoft Entra ID provisioning a group: created with its own schema URN
/// beside the core one, a thousand members added in one PATCH, members
/// removed in both dialects, renamed, read without members, deleted.
///
/// Sources: "Tutorial: Develop and plan provisioning for a SCIM endpoint in
/// Microsoft Entra ID",
/// <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups>
/// (Create Group, Get Group, Get Group by displayName, Update Group
/// [Non-member attributes], [Add Members], [Remove Members], Delete Group;
/// "Support updating multiple group memberships with a single PATCH"), and
/// "Known issues and resolutions with SCIM 2.0 protocol compliance of the
/// Microsoft Entra user provisioning service",
/// <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/application-provisioning-config-problem-scim-compatibility>
/// (removing a group member with and without `aadOptscim062020`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_provisions_a_group_of_a_thousand_and_removes_members_one_by_one() {
    let server = TestServer::start().await;
    let entra = Idp::connect(&server, "contoso", "Azure Active Directory SCIM Client").await;
    let ids = entra.create_users("member-", 1000).await;
    let everyone: BTreeSet<String> = ids.iter().cloned().collect();

    // Get Group by displayName, before creating it.
    assert_empty_list(
        &entra.get("/Groups?excludedAttributes=members&filter=displayName eq \"Sales Team\"").await,
    );
    // Create Group: no members yet.
    let object_id = "2f6a9c31-d84e-4b17-a5c0-7e3b1d9f8a26";
    let created = entra
        .post(
            "/Groups",
            json!({"schemas": [GROUP, ENTRA_GROUP], "externalId": object_id, "displayName": "Sales Team",
                   "meta": {"resourceType": "Group"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let group_id = id_of(&created.body);
    let path = format!("/Groups/{group_id}");
    assert_eq!(created.body["meta"]["resourceType"], "Group");
    assert_eq!(
        without_server_fields(created.body.clone()),
        json!({"schemas": [GROUP], "externalId": object_id, "displayName": "Sales Team"})
    );

    // Update Group [Add Members]: a thousand in one request, "$ref": null.
    let members: Vec<Value> = ids.iter().map(|id| json!({"$ref": null, "value": id})).collect();
    let answer =
        entra.patch(&path, json!([{"op": "Add", "path": "members", "value": members}])).await;
    assert_members(&answer, &everyone, "a thousand added");
    let member = &answer.body["members"][0];
    assert_eq!(member["type"], "User");
    assert_eq!(
        member["$ref"],
        format!("{}/scim/v2/Users/{}", server.base, member["value"].as_str().unwrap())
    );

    // Update Group [Remove Members], default dialect: the members to remove
    // as the value. Exactly that one goes; everybody else stays.
    let answer = entra
        .patch(&path, json!([{"op": "Remove", "path": "members", "value": [{"$ref": null, "value": ids[10]}]}]))
        .await;
    let mut expected = everyone.clone();
    expected.remove(&ids[10]);
    assert_members(&answer, &expected, "removed by value: only the one member named");
    // The same with the flag: a value filter in the path.
    let answer = entra
        .patch(
            &path,
            json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", ids[20])}]),
        )
        .await;
    expected.remove(&ids[20]);
    assert_members(&answer, &expected, "removed by filter: only the one member named");
    // A retried add changes nothing for those already there.
    let answer = entra
        .patch(
            &path,
            json!([{"op": "Add", "path": "members", "value": [{"$ref": null, "value": ids[0]}, {"$ref": null, "value": ids[10]}]}]),
        )
        .await;
    expected.insert(ids[10].clone());
    assert_members(&answer, &expected, "a retried add");

    // Update Group [Non-member attributes]: the members stay.
    let answer = entra
        .patch(&path, json!([{"op": "Replace", "path": "displayName", "value": "Sales Team EMEA"}]))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["displayName"], "Sales Team EMEA");
    assert_members(&answer, &expected, "a rename keeps the members");

    // Get Group, and Get Group by displayName, without members.
    let slim = entra.get(&format!("{path}?excludedAttributes=members")).await;
    assert_eq!(slim.status, 200, "{}", slim.body);
    assert_eq!(
        without_server_fields(slim.body),
        json!({"schemas": [GROUP], "externalId": object_id, "displayName": "Sales Team EMEA"})
    );
    let found = entra
        .get("/Groups?excludedAttributes=members&filter=displayName eq \"Sales Team EMEA\"")
        .await;
    assert_listed(&found, &[&group_id]);
    assert!(found.body["Resources"][0].get("members").is_none(), "{}", found.body);
    assert_empty_list(
        &entra.get("/Groups?excludedAttributes=members&filter=displayName eq \"Sales Team\"").await,
    );

    // A disabled user keeps its memberships.
    let disabled = &ids[30];
    let answer = entra
        .patch(
            &format!("/Users/{disabled}"),
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .await;
    assert_eq!((answer.status, &answer.body["active"]), (200, &json!(false)));
    assert_eq!(
        answer.body["groups"],
        json!([{"value": group_id, "display": "Sales Team EMEA", "type": "direct",
                "$ref": format!("{}/scim/v2{path}", server.base)}])
    );
    assert_members(&entra.get(&path).await, &expected, "after a member was disabled");

    // Delete Group.
    let deleted = entra.delete(&path).await;
    assert_eq!((deleted.status, &deleted.body), (204, &Value::Null));
    assert_error(&entra.get(&path).await, 404, None);
    let user = entra.get(&format!("/Users/{disabled}")).await;
    assert_eq!(user.status, 200);
    assert!(user.body.get("groups").is_none(), "{}", user.body);
    server.stop().await.unwrap();
}

/// Okta provisioning users and pushing a group: the userName check with
/// Okta's paging parameters, create, read, a profile update by PUT,
/// deactivation and reactivation by a path-less PATCH, then Group Push
/// (create, membership, rename with the id in the value, full replace of
/// the members, "Push now" of an empty group, unlink). Okta never deletes
/// a user. Okta sends `application/json` and `text/json` bodies.
///
/// Source: Okta, "SCIM 2.0 Protocol Reference" ("Okta and SCIM Version
/// 2.0"), <https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20/>.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn okta_provisions_users_and_pushes_a_group_but_never_deletes_a_user() {
    let server = TestServer::start().await;
    let mut okta = Idp::connect(&server, "initech", "Okta SCIM Client 1.0.0").await;
    okta.content_type = "application/json";

    // Determine if the user already exists.
    let lookup = "/Users?filter=userName eq \"pgibbons@initech.example\"&startIndex=1&count=100";
    assert_empty_list(&okta.get(lookup).await);

    // Create the user: the password is taken and never returned.
    let created = okta
        .post(
            "/Users",
            json!({
                "schemas": [USER],
                "userName": "pgibbons@initech.example",
                "name": {"givenName": "Peter", "familyName": "Gibbons"},
                "emails": [{"primary": true, "value": "pgibbons@initech.example", "type": "work"}],
                "displayName": "Peter Gibbons",
                "locale": "en-US",
                "externalId": "00uPg1bb0n5Init3ch7",
                "groups": [],
                "password": "t0p-s3cret-pw",
                "active": true
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(!created.body.to_string().contains("t0p-s3cret-pw"));
    let expected_user = json!({
        "schemas": [USER],
        "userName": "pgibbons@initech.example",
        "name": {"givenName": "Peter", "familyName": "Gibbons"},
        "emails": [{"primary": true, "value": "pgibbons@initech.example", "type": "work"}],
        "displayName": "Peter Gibbons",
        "locale": "en-US",
        "externalId": "00uPg1bb0n5Init3ch7",
        "active": true
    });
    assert_eq!(without_server_fields(created.body.clone()), expected_user);
    let id = id_of(&created.body);
    let path = format!("/Users/{id}");

    // Retrieve the user, and find it by the same lookup.
    let fetched = okta.get(&path).await;
    assert_eq!((fetched.status, &fetched.body), (200, &created.body));
    assert_listed(&okta.get(lookup).await, &[&id]);

    // Update the user by PUT: the whole object, with a new middle name and
    // the read-only attributes Okta echoes back.
    let answer = okta
        .send_as(
            Method::PUT,
            &path,
            Some(json!({
                "schemas": [USER],
                "id": id,
                "userName": "pgibbons@initech.example",
                "name": {"givenName": "Peter", "middleName": "Ron", "familyName": "Gibbons"},
                "emails": [{"primary": true, "value": "pgibbons@initech.example", "type": "work",
                            "display": "pgibbons@initech.example"}],
                "displayName": "Peter Gibbons",
                "locale": "en-US",
                "externalId": "00uPg1bb0n5Init3ch7",
                "active": true,
                "groups": [],
                "meta": {"resourceType": "User"}
            })),
            "text/json",
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut expected_user = expected_user;
    expected_user["name"] =
        json!({"givenName": "Peter", "middleName": "Ron", "familyName": "Gibbons"});
    expected_user["emails"][0]["display"] = json!("pgibbons@initech.example");
    assert_eq!(without_server_fields(answer.body.clone()), expected_user);
    assert_eq!(answer.body["meta"]["created"], created.body["meta"]["created"]);

    // Deactivate, then reactivate: a path-less replace of `active`.
    let answer = okta.patch(&path, json!([{"op": "replace", "value": {"active": false}}])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    expected_user["active"] = json!(false);
    assert_eq!(without_server_fields(answer.body.clone()), expected_user);
    assert_eq!(okta.get(&path).await.body["active"], false);
    let answer = okta.patch(&path, json!([{"op": "replace", "value": {"active": true}}])).await;
    assert_eq!((answer.status, &answer.body["active"]), (200, &json!(true)));

    // A second user, for the group.
    let other = id_of(
        &okta
            .created(
                "/Users",
                json!({"schemas": [USER], "userName": "snagheenanajar@initech.example",
                       "name": {"givenName": "Samir", "familyName": "Nagheenanajar"}, "active": true}),
            )
            .await,
    );
    // Retrieve users, page by page.
    let page = okta.get("/Users?startIndex=1&count=100").await;
    assert_listed(&page, &[&id, &other]);

    // Group Push: create the group, empty.
    let pushed = okta
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "Initech Engineers", "members": []}),
        )
        .await;
    assert_eq!(pushed.status, 201, "{}", pushed.body);
    assert_eq!(
        without_server_fields(pushed.body.clone()),
        json!({"schemas": [GROUP], "displayName": "Initech Engineers"})
    );
    let group_id = id_of(&pushed.body);
    let group_path = format!("/Groups/{group_id}");
    let fetched = okta.get(&group_path).await;
    assert_eq!((fetched.status, &fetched.body), (200, &pushed.body));

    // Membership: remove one who is not there, add one, in one request.
    let answer = okta
        .patch(
            &group_path,
            json!([
                {"op": "remove", "path": format!("members[value eq \"{other}\"]")},
                {"op": "add", "path": "members", "value": [{"value": id, "display": "pgibbons@initech.example"}]}
            ]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(member_ids(&answer.body), BTreeSet::from([id.clone()]));
    // The name update that comes with every membership update: the id in
    // the value, which the server owns and ignores.
    let answer = okta
        .patch(
            &group_path,
            json!([{"op": "replace", "value": {"id": group_id, "displayName": "Initech Engineering"}}]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        (&answer.body["id"], &answer.body["displayName"]),
        (&json!(group_id), &json!("Initech Engineering"))
    );
    assert_eq!(
        member_ids(&answer.body),
        BTreeSet::from([id.clone()]),
        "a rename keeps the members"
    );
    // A full push of the membership.
    let answer = okta
        .patch(
            &group_path,
            json!([{"op": "replace", "path": "members", "value": [
                {"value": id, "display": "pgibbons@initech.example"},
                {"value": other, "display": "snagheenanajar@initech.example"}
            ]}]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(member_ids(&answer.body), BTreeSet::from([id.clone(), other.clone()]));
    // "Push now" of a group that became empty in Okta.
    let answer =
        okta.patch(&group_path, json!([{"op": "replace", "path": "members", "value": []}])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.get("members").is_none(), "{}", answer.body);
    assert_eq!(answer.body["displayName"], "Initech Engineering");
    assert!(okta.get(&path).await.body.get("groups").is_none());
    // Retrieve groups, page by page.
    let groups = okta.get("/Groups?startIndex=1&count=100").await;
    assert_listed(&groups, &[&group_id]);

    // Unlink the pushed group, deleting it in the app.
    let deleted = okta.delete(&group_path).await;
    assert_eq!((deleted.status, &deleted.body), (204, &Value::Null));
    assert_error(&okta.get(&group_path).await, 404, None);
    // Both users are still there: Okta deactivates, it never deletes.
    assert_eq!(okta.get(&path).await.status, 200);
    assert_eq!(okta.get(&format!("/Users/{other}")).await.status, 200);
    server.stop().await.unwrap();
}

/// OneLogin provisioning a user: the initial connection with a userName
/// that cannot exist, then the userName check, create, read, update by PUT,
/// a group, and deletion. OneLogin's query strings end with `&`; its
/// templates name the draft schema URNs (`urn:scim:schemas:core:2.0`,
/// `urn:scim:schemas:extension:enterprise:2.0`) and give `emails` as one
/// object rather than a list.
///
/// Sources: OneLogin, "Step 2. Implement RESTful SCIM APIs for Your App",
/// <https://developers.onelogin.com/scim/implement-scim-api> (the calls and
/// their order), and "Step 1. Define Your SCIM User Schema",
/// <https://developers.onelogin.com/scim/define-user-schema> (the JSON
/// template: `emails` as an object, the extension as a URN-named object).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onelogin_provisions_a_user_with_trailing_ampersands_and_draft_urns() {
    let server = TestServer::start().await;
    let onelogin = Idp::connect(&server, "globex", "OneLogin SCIM").await;
    const CORE_DRAFT: &str = "urn:scim:schemas:core:2.0";
    const ENTERPRISE_DRAFT: &str = "urn:scim:schemas:extension:enterprise:2.0";

    // Initial connection, then the userName check of a user to provision.
    assert_empty_list(
        &onelogin.get("/Users?filter=userName eq \"onelogin-connection-check\"&").await,
    );
    let lookup = "/Users?filter=userName eq \"jdoe@globex.example\"&";
    assert_empty_list(&onelogin.get(lookup).await);

    // Create User.
    let created = onelogin
        .post(
            "/Users",
            json!({
                "schemas": [CORE_DRAFT, ENTERPRISE_DRAFT],
                "userName": "jdoe@globex.example",
                "name": {"familyName": "Doe", "givenName": "Jane", "formatted": "Jane Doe"},
                "emails": {"value": "jdoe@globex.example", "type": "work", "primary": true},
                "title": "Engineer",
                ENTERPRISE_DRAFT: {"department": "R&D"}
            }),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let expected = json!({
        "schemas": [USER, ENTERPRISE],
        "userName": "jdoe@globex.example",
        "name": {"familyName": "Doe", "givenName": "Jane", "formatted": "Jane Doe"},
        "emails": [{"value": "jdoe@globex.example", "type": "work", "primary": true}],
        "title": "Engineer",
        ENTERPRISE: {"department": "R&D"}
    });
    assert_eq!(without_server_fields(created.body.clone()), expected);
    let id = id_of(&created.body);
    let path = format!("/Users/{id}");
    assert_listed(&onelogin.get(lookup).await, &[&id]);

    // Get User by ID.
    let fetched = onelogin.get(&path).await;
    assert_eq!((fetched.status, &fetched.body), (200, &created.body));

    // Update User: the whole template again, by PUT, draft URNs included.
    let answer = onelogin
        .put(
            &path,
            json!({
                "schemas": [CORE_DRAFT, ENTERPRISE_DRAFT],
                "userName": "jdoe@globex.example",
                "name": {"familyName": "Doe", "givenName": "Jane", "formatted": "Jane Doe"},
                "emails": {"value": "jdoe@globex.example", "type": "work", "primary": true},
                "title": "Staff Engineer",
                ENTERPRISE_DRAFT: {"department": "Platform", "employeeNumber": "4711"}
            }),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut expected = expected;
    expected["title"] = json!("Staff Engineer");
    expected[ENTERPRISE] = json!({"department": "Platform", "employeeNumber": "4711"});
    assert_eq!(without_server_fields(answer.body.clone()), expected);

    // Get Users, Get Groups, Create Group, Patch Group.
    assert_listed(&onelogin.get("/Users?startIndex=1&count=100&").await, &[&id]);
    assert_empty_list(&onelogin.get("/Groups?startIndex=1&count=100&").await);
    let group = onelogin.created("/Groups", json!({"displayName": "Temps", "members": []})).await;
    let group_path = format!("/Groups/{}", id_of(&group));
    let answer = onelogin
        .patch(&group_path, json!([{"op": "add", "path": "members", "value": [{"value": id}]}]))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(member_ids(&answer.body), BTreeSet::from([id.clone()]));
    assert_listed(
        &onelogin.get("/Groups?filter=displayName eq \"Temps\"&").await,
        &[&id_of(&group)],
    );

    // Delete User (the app's choice when a user is deleted in OneLogin):
    // gone, and out of its group.
    let deleted = onelogin.delete(&path).await;
    assert_eq!((deleted.status, &deleted.body), (204, &Value::Null));
    assert_error(&onelogin.get(&path).await, 404, None);
    assert!(onelogin.get(&group_path).await.body.get("members").is_none());
    assert_empty_list(&onelogin.get(lookup).await);
    server.stop().await.unwrap();
}

/// A path-less `replace` whose keys are attribute paths (`name.givenName`,
/// `urn:...:enterprise:2.0:User:employeeNumber`) must change those
/// attributes: several servers answered 200 and changed nothing, so Entra
/// ID believed the update done.
///
/// Source of the request: "Known issues and resolutions with SCIM 2.0
/// protocol compliance of the Microsoft Entra user provisioning service"
/// ("Requests to replace multiple attributes", with the feature flag),
/// <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/application-provisioning-config-problem-scim-compatibility>.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pathless_replace_with_dotted_and_urn_keys_changes_those_attributes() {
    let server = TestServer::start().await;
    let tenant = server.tenant("contoso").await;
    let (_, token) = server.token("contoso", TokenScope::Scim).await;
    let entra = Idp {
        server: &server,
        token,
        user_agent: "Azure Active Directory SCIM Client",
        content_type: "application/scim+json",
    };
    let created = entra
        .created(
            "/Users",
            json!({"userName": "plund@contoso.example", "displayName": "P. Lund",
                   "name": {"givenName": "Pernille", "familyName": "Holm", "formatted": "Pernille Holm"},
                   ENTERPRISE: {"employeeNumber": "100", "department": "Ops", "costCenter": "CC-1"}}),
        )
        .await;
    let id = id_of(&created);
    let path = format!("/Users/{id}");
    let answer = entra
        .patch(
            &path,
            json!([{"op": "replace", "value": {
                "urn:ietf:params:scim:schemas:core:2.0:User:displayName": "Pia Lund",
                "name.givenName": "Pia",
                "NAME.FAMILYNAME": "Lund",
                format!("{ENTERPRISE}:employeeNumber"): "E-2291",
                format!("{ENTERPRISE}:manager"): "m-7730"
            }}]),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        without_server_fields(answer.body.clone()),
        json!({
            "schemas": [USER, ENTERPRISE],
            "userName": "plund@contoso.example",
            "displayName": "Pia Lund",
            "name": {"givenName": "Pia", "familyName": "Lund", "formatted": "Pernille Holm"},
            ENTERPRISE: {"employeeNumber": "E-2291", "department": "Ops", "costCenter": "CC-1",
                         "manager": {"value": "m-7730"}}
        })
    );
    assert_ne!(answer.headers["etag"], "W/\"1\"", "the version moved on");
    assert_eq!(entra.get(&path).await.body, answer.body, "what was answered is what is stored");
    assert_eq!(
        event_types(&server, &tenant.tenant_id, &format!("user:{id}")).await,
        vec!["UserCreated", "UserUpdated"]
    );
    server.stop().await.unwrap();
}

/// Renaming a group, or replacing any attribute but `members`, must leave
/// its members alone: servers that rebuilt the group from the PATCH value
/// emptied it at every rename, and Okta renames at every membership push.
///
/// Sources: "Tutorial: Develop and plan provisioning for a SCIM endpoint in
/// Microsoft Entra ID" ("Update Group [Non-member attributes]"),
/// <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups>,
/// and Okta, "SCIM 2.0 Protocol Reference" ("Update a specific Group
/// name"), <https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20/>.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_groups_name_or_other_attributes_keeps_its_members() {
    let server = TestServer::start().await;
    let tenant = server.tenant("contoso").await;
    let (_, token) = server.token("contoso", TokenScope::Scim).await;
    let idp = Idp {
        server: &server,
        token,
        user_agent: "sequences",
        content_type: "application/scim+json",
    };
    let users = idp.create_users("staff-", 3).await;
    let everyone: BTreeSet<String> = users.iter().cloned().collect();
    let members: Vec<Value> = users.iter().map(|id| json!({"value": id})).collect();
    let group = idp.created("/Groups", json!({"displayName": "Staff", "members": members})).await;
    let group_id = id_of(&group);
    let path = format!("/Groups/{group_id}");
    assert_eq!(member_ids(&group), everyone);

    for (operations, display_name) in [
        (json!([{"op": "Replace", "path": "displayName", "value": "Staff 2"}]), "Staff 2"),
        (json!([{"op": "replace", "value": {"displayName": "Staff 3"}}]), "Staff 3"),
        (
            json!([{"op": "replace", "value": {"id": group_id, "displayName": "Staff 4"}}]),
            "Staff 4",
        ),
        (json!([{"op": "replace", "path": "externalId", "value": "ext-staff"}]), "Staff 4"),
        (
            json!([{"op": "replace", "value": {"externalId": "ext-staff-2", "displayName": "Staff 5"}}]),
            "Staff 5",
        ),
    ] {
        let answer = idp.patch(&path, operations.clone()).await;
        assert_eq!(answer.status, 200, "{operations}: {}", answer.body);
        assert_eq!(answer.body["displayName"], display_name, "{operations}");
        assert_eq!(member_ids(&answer.body), everyone, "{operations}");
        assert_eq!(member_ids(&idp.get(&path).await.body), everyone, "{operations}");
    }
    let events = event_types(&server, &tenant.tenant_id, &format!("group:{group_id}")).await;
    assert!(!events.iter().any(|event| event == "GroupMembersRemoved"), "{events:?}");
    server.stop().await.unwrap();
}

/// Paging: `count` is honoured above 100 up to the advertised
/// `filter.maxResults` (1,000), 100 is only the default, and every page
/// says where it starts, how many it holds and how many there are in all,
/// as integers. Okta walks `startIndex` by `count` until `totalResults`; a
/// server that cut pages at 100 whatever `count` asked made clients skip
/// resources.
///
/// Sources: Okta, "SCIM 2.0 Protocol Reference" ("Retrieve Users"),
/// <https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20/>,
/// and RFC 7644 section 3.4.2.4, <https://www.rfc-editor.org/rfc/rfc7644#section-3.4.2.4>.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_honour_counts_above_one_hundred_and_say_where_they_are() {
    const USERS: usize = 1001;
    let server = TestServer::start().await;
    let okta = Idp::connect(&server, "initech", "Okta SCIM Client 1.0.0").await;
    let created: BTreeSet<String> = okta.create_users("paged-", USERS).await.into_iter().collect();
    let config = okta.get("/ServiceProviderConfig").await.body;
    assert_eq!(config["filter"]["maxResults"], 1000);

    // (totalResults, startIndex, itemsPerPage, resources on the page)
    let metadata = |answer: &Answer| {
        assert_eq!(answer.status, 200, "{}", answer.body);
        (
            answer.body["totalResults"].clone(),
            answer.body["startIndex"].clone(),
            answer.body["itemsPerPage"].clone(),
            answer.body["Resources"].as_array().map_or(0, Vec::len),
        )
    };
    let all = okta.get("/Users?count=1000").await;
    assert_eq!(metadata(&all), (json!(USERS), json!(1), json!(1000), 1000));
    let last = okta.get("/Users?startIndex=1001&count=1000").await;
    assert_eq!(metadata(&last), (json!(USERS), json!(1001), json!(1), 1));
    let mut order = listed_ids(&all.body);
    order.extend(listed_ids(&last.body));
    assert_eq!(order.iter().cloned().collect::<BTreeSet<_>>(), created, "every user once");

    let default = okta.get("/Users").await;
    assert_eq!(metadata(&default), (json!(USERS), json!(1), json!(100), 100), "the default");
    let first = okta.get("/Users?startIndex=1&count=150").await;
    assert_eq!(metadata(&first), (json!(USERS), json!(1), json!(150), 150), "not cut at 100");
    let second = okta.get("/Users?startIndex=151&count=150").await;
    assert_eq!(metadata(&second), (json!(USERS), json!(151), json!(150), 150));
    let mut walked = listed_ids(&first.body);
    walked.extend(listed_ids(&second.body));
    assert_eq!(walked, order[..300], "in the same order whatever the count");

    // Okta's walk: count=100 from startIndex 1 until totalResults.
    let mut walked = Vec::new();
    let mut start_index = 1;
    while start_index <= USERS {
        let answer = okta.get(&format!("/Users?startIndex={start_index}&count=100")).await;
        let expected_items = (USERS + 1 - start_index).min(100);
        assert_eq!(
            metadata(&answer),
            (json!(USERS), json!(start_index), json!(expected_items), expected_items)
        );
        walked.extend(listed_ids(&answer.body));
        start_index += 100;
    }
    assert_eq!(walked, order);
    let beyond = okta.get("/Users?startIndex=1002&count=100").await;
    assert_eq!(metadata(&beyond), (json!(USERS), json!(1002), json!(0), 0));
    let above_max = okta.get("/Users?count=5000").await;
    assert_eq!(metadata(&above_max), (json!(USERS), json!(1), json!(1000), 1000), "capped");
    let searched = okta.post("/Users/.search", json!({"startIndex": 101, "count": 150})).await;
    assert_eq!(metadata(&searched), (json!(USERS), json!(101), json!(150), 150));
    assert_eq!(listed_ids(&searched.body), order[100..250]);
    server.stop().await.unwrap();
}

/// A deactivated user still holds its userName: a second POST of the same
/// userName is 409 `uniqueness` (the identity provider must match it and
/// PATCH `active` instead), and it changes nothing. Once the user is
/// deleted, the userName is free and the same POST is 201.
///
/// Sources: "Tutorial: Develop and plan provisioning for a SCIM endpoint in
/// Microsoft Entra ID" ("Soft-deleting a user `active=false` and restoring
/// the user `active=true`"; the user is returned whether or not it is
/// active), <https://learn.microsoft.com/en-us/entra/identity/app-provisioning/use-scim-to-provision-users-and-groups>,
/// and Okta, "SCIM 2.0 Protocol Reference" (409 when the user already
/// exists), <https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20/>.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_keeps_its_user_name_until_it_is_deleted() {
    let server = TestServer::start().await;
    let entra = Idp::connect(&server, "contoso", "Azure Active Directory SCIM Client").await;
    let body = json!({"schemas": [USER], "userName": "leaver@contoso.example", "externalId": "obj-leaver",
                      "active": true, "title": "Clerk"});
    let id = id_of(&entra.created("/Users", body.clone()).await);
    let path = format!("/Users/{id}");
    let answer =
        entra.patch(&path, json!([{"op": "Replace", "path": "active", "value": "False"}])).await;
    assert_eq!((answer.status, &answer.body["active"]), (200, &json!(false)));
    let before = entra.get(&path).await;

    let mut again = body.clone();
    again["title"] = json!("Senior Clerk");
    assert_error(&entra.post("/Users", again.clone()).await, 409, Some("uniqueness"));
    again["userName"] = json!("LEAVER@contoso.example");
    assert_error(&entra.post("/Users", again.clone()).await, 409, Some("uniqueness"));
    let after = entra.get(&path).await;
    assert_eq!(
        (after.body.clone(), after.headers["etag"].clone()),
        (before.body, before.headers["etag"].clone())
    );
    assert_listed(&entra.get("/Users?filter=userName eq \"leaver@contoso.example\"").await, &[&id]);

    assert_eq!(entra.delete(&path).await.status, 204);
    let recreated = entra.post("/Users", again).await;
    assert_eq!(recreated.status, 201, "{}", recreated.body);
    assert_ne!(id_of(&recreated.body), id);
    assert_eq!(recreated.body["active"], true);
    assert_eq!(recreated.body["title"], "Senior Clerk");
    server.stop().await.unwrap();
}

/// Another tenant's users and groups do not exist for a valid token of
/// tenant B: every method on them is 404 (never 403, which would say they
/// exist), no filter finds them, and nothing B does reaches them.
///
/// Source: RFC 7644 section 7.4 ("Authorization"), and section 3.12 for
/// the 404 body, <https://www.rfc-editor.org/rfc/rfc7644#section-7.4>;
/// rollcall's rule "A token sees only its own tenant: another tenant's
/// resource is 404, never 403" (ARCHITECTURE.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_users_and_groups_are_404_and_no_filter_finds_them() {
    let server = TestServer::start().await;
    let a = Idp::connect(&server, "tenant-a", "Azure Active Directory SCIM Client").await;
    let b = Idp::connect(&server, "tenant-b", "Azure Active Directory SCIM Client").await;
    let user = a
        .created(
            "/Users",
            json!({"userName": "secret.agent@a.example", "externalId": "ext-a",
                   "emails": [{"type": "work", "value": "secret.agent@a.example"}]}),
        )
        .await;
    let user_id = id_of(&user);
    let group = a
        .created(
            "/Groups",
            json!({"displayName": "A Team", "externalId": "ext-group-a",
                                            "members": [{"value": user_id}]}),
        )
        .await;
    let group_id = id_of(&group);
    let user_path = format!("/Users/{user_id}");
    let group_path = format!("/Groups/{group_id}");
    let user_before = a.get(&user_path).await;
    let group_before = a.get(&group_path).await;

    for path in [&user_path, &group_path] {
        assert_error(&b.get(path).await, 404, None);
        assert_error(&b.get(&format!("{path}?excludedAttributes=members")).await, 404, None);
        assert_error(
            &b.patch(path, json!([{"op": "replace", "path": "displayName", "value": "pwned"}]))
                .await,
            404,
            None,
        );
        assert_error(&b.delete(path).await, 404, None);
    }
    assert_error(&b.put(&user_path, json!({"userName": "pwned"})).await, 404, None);
    assert_error(&b.put(&group_path, json!({"displayName": "pwned"})).await, 404, None);
    assert_error(
        &b.patch(&user_path, json!([{"op": "Replace", "path": "active", "value": "False"}])).await,
        404,
        None,
    );

    for query in [
        "/Users".to_owned(),
        "/Users?filter=userName eq \"secret.agent@a.example\"".to_owned(),
        "/Users?filter=externalId eq ext-a".to_owned(),
        format!("/Users?filter=id eq \"{user_id}\""),
        "/Users?filter=emails[type eq \"work\"].value eq \"secret.agent@a.example\"".to_owned(),
        "/Users?filter=userName sw \"s\"".to_owned(),
        "/Groups".to_owned(),
        "/Groups?excludedAttributes=members&filter=displayName eq \"A Team\"".to_owned(),
        format!("/Groups?filter=members[value eq \"{user_id}\"]"),
        format!("/Groups?filter=id eq \"{group_id}\""),
    ] {
        assert_empty_list(&b.get(&query).await);
    }
    assert_empty_list(&b.post("/.search", json!({"filter": "meta.resourceType pr"})).await);
    assert_empty_list(
        &b.post("/Users/.search", json!({"filter": "externalId eq \"ext-a\""})).await,
    );

    // B's own group naming A's user id holds a plain reference: it does
    // not show A's user, and A's user does not join B's group.
    let b_group = b
        .created("/Groups", json!({"displayName": "A Team", "members": [{"value": user_id}]}))
        .await;
    assert_eq!(b_group["members"][0]["value"], user_id.as_str());
    assert_empty_list(&b.get(&format!("/Users?filter=id eq \"{user_id}\"")).await);
    // The same userName is free in B: a different user.
    let b_user = b.created("/Users", json!({"userName": "secret.agent@a.example"})).await;
    assert_ne!(id_of(&b_user), user_id);

    let user_after = a.get(&user_path).await;
    assert_eq!(
        (user_after.body, user_after.headers["etag"].clone()),
        (user_before.body, user_before.headers["etag"].clone())
    );
    let group_after = a.get(&group_path).await;
    assert_eq!(
        (group_after.body, group_after.headers["etag"].clone()),
        (group_before.body, group_before.headers["etag"].clone())
    );
    assert_listed(&a.get("/Users").await, &[&user_id]);
    server.stop().await.unwrap();
}
