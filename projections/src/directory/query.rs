//! A SCIM filter translated to SQL over the directory tables, with bind
//! parameters only: attribute names become JSON paths passed as parameters,
//! values are parameters, and no request text is ever spliced into SQL.
//!
//! The translation, by what the path names:
//! * `id`, `externalId`, the unique name (a User's `userName`, a Group's
//!   `displayName`), `meta.created`, `meta.lastModified`,
//!   `meta.resourceType`: columns, so the common lookups use an index;
//! * a Group's `members` and a User's `groups`: the membership table;
//! * anything else: the document's JSON, through `json_each`, which yields
//!   one row for a scalar and one per element for a list, so single- and
//!   multi-valued attributes read alike and "any value matches" is `EXISTS`.
//!
//! Comparison follows the attribute's type from the schema: strings fold
//! case unless caseExact (with `scim_fold`, see `crate::functions`), dates
//! compare as instants, booleans only by equality, numbers numerically. `ne`
//! is `not (eq)`, `eq null` is "not present". A complex multi-valued
//! attribute without a sub-attribute means its `value`
//! (`emails co "@example.com"`).
//!
//! On PostgreSQL the same translation reads the document's `jsonb` forms
//! (`schema::POSTGRES_SEARCH`): `rollcall_values` stands for `json_each`,
//! and a case-insensitive string is compared in the folded copy, folded by
//! the same Rust function that `scim_fold` calls, never by a collation.
//! Text compares bytewise (`COLLATE "C"`), as SQLite's BINARY does.

use events::db::Value as SqlValue;
use events::db::{Db, Dialect, values_as_params};

use super::filter::{AttrPath, CompareOp, CompareValue, Filter};
use super::schema::{
    Attribute, AttributeType, ENTERPRISE_USER_SCHEMA, Resolved, ResourceKind, resolve,
};
use super::store::{RESOURCE_COLUMNS, ResourceRow, kind_name, resource_from_row};
use crate::ProjectionError;
use crate::functions::fold;

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The filter parses but cannot be applied (a `gt` on a boolean, a
    /// complex attribute without a sub-attribute, ...): a 400 invalidFilter.
    #[error("{0}")]
    InvalidFilter(String),
    #[error(transparent)]
    Storage(#[from] ProjectionError),
}

/// One page of a search, and how many resources match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub total_results: u64,
    pub resources: Vec<ResourceRow>,
}

/// The resources of `kind` in `tenant` matching `filter`, in a stable order
/// (creation), skipping `offset` and returning at most `limit`.
pub fn search(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    filter: Option<&Filter>,
    offset: u64,
    limit: u64,
) -> Result<Page, QueryError> {
    search_sorted(connection, tenant, kind, filter, None, offset, limit)
}

/// How a search is ordered: by one attribute, ascending or descending.
/// Resources without the attribute come last either way; creation order
/// breaks ties, so paging stays stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sort {
    pub path: AttrPath,
    pub descending: bool,
}

/// [`search`], ordered by `sort` (creation order when `None`).
pub fn search_sorted(
    connection: &dyn Db,
    tenant: &str,
    kind: ResourceKind,
    filter: Option<&Filter>,
    sort: Option<&Sort>,
    offset: u64,
    limit: u64,
) -> Result<Page, QueryError> {
    let mut translator =
        Translator { kind, params: Vec::new(), aliases: 0, dialect: connection.dialect() };
    let condition = match filter {
        Some(filter) => translator.filter(filter, &Scope::Resource)?,
        None => translator.truth().to_owned(),
    };
    let condition_params = translator.params.len();
    // Ordering parameters are numbered after the condition's, so the count
    // query (which binds only the condition's) never sees them.
    let order = match sort {
        Some(sort) => {
            let direction = if sort.descending { "DESC" } else { "ASC" };
            format!("{} {direction} NULLS LAST, r.created_position", translator.order(&sort.path)?)
        }
        None => "r.created_position".to_owned(),
    };
    let order_params = translator.params.split_off(condition_params);
    let mut params =
        vec![SqlValue::Text(tenant.to_owned()), SqlValue::Text(kind_name(kind).to_owned())];
    params.extend(translator.params);
    let from =
        format!("FROM scim_resources r WHERE r.tenant_id = ?1 AND r.kind = ?2 AND ({condition})");
    let storage = |context| {
        move |error| QueryError::Storage(ProjectionError::Storage { context, source: error })
    };
    let mut resources = Vec::new();
    if limit > 0 {
        let mut page_params = params.clone();
        page_params.extend(order_params);
        page_params.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        page_params.push(SqlValue::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
        let limit_at = page_params.len() - 1;
        let offset_at = limit_at + 1;
        // A narrow filter finds its handful of rows through its own index;
        // the form below would only add two scratch tables around them.
        let narrow = filter.is_some_and(|filter| is_narrow(kind, filter));
        let sql = if sort.is_none() && !narrow {
            // Creation order: skip through the (tenant, kind, created)
            // index alone, which also holds each id, and read only the
            // page's rows; OFFSET over whole rows made a page near the end
            // of 100,000 users cost 70 ms.
            format!(
                "SELECT {RESOURCE_COLUMNS} FROM scim_resources r WHERE r.tenant_id = ?1 AND r.id IN \
                 (SELECT r.id {from} ORDER BY {order} LIMIT ?{limit_at} OFFSET ?{offset_at}) \
                 ORDER BY {order}"
            )
        } else {
            format!(
                "SELECT {RESOURCE_COLUMNS} {from} ORDER BY {order} LIMIT ?{limit_at} OFFSET ?{offset_at}"
            )
        };
        resources = connection
            .prepare_cached(&sql)
            .and_then(|mut statement| {
                statement.query_map(values_as_params(&page_params), resource_from_row)?.collect()
            })
            .map_err(storage("reading search results"))?;
    }
    let returned = u64::try_from(resources.len()).unwrap_or(u64::MAX);
    // A first page that is not full holds every match: no need to count.
    if offset == 0 && returned < limit {
        return Ok(Page { total_results: returned, resources });
    }
    let total: i64 = connection
        .prepare_cached(&format!("SELECT count(*) {from}"))
        .and_then(|mut statement| statement.query_row(values_as_params(&params), |row| row.get(0)))
        .map_err(storage("counting search results"))?;
    Ok(Page { total_results: u64::try_from(total).unwrap_or(0), resources })
}

/// A resource attribute kept in a column of `scim_resources`.
struct Column {
    column: &'static str,
    semantics: Semantics,
    /// An equality on it is answered through an index.
    indexed: bool,
}

fn column_of(kind: ResourceKind, resolved: &Resolved) -> Option<Column> {
    let sub = resolved.sub_attribute.map(|sub| sub.name);
    let unique_name = match kind {
        ResourceKind::User => "userName",
        ResourceKind::Group => "displayName",
    };
    let (column, semantics, indexed) = match (resolved.attribute.name, sub) {
        ("id", None) => ("r.id", Semantics::exact_string(), true),
        ("externalId", None) => ("r.external_id", Semantics::exact_string(), true),
        (name, None)
            if name == unique_name
                && resolved.schema.is_some_and(|s| s != ENTERPRISE_USER_SCHEMA) =>
        {
            let folded = Semantics { kind: AttributeType::String, case_exact: false, folded: true };
            ("r.name_key", folded, true)
        }
        ("meta", Some("created")) => {
            let time = Semantics { kind: AttributeType::DateTime, case_exact: true, folded: false };
            ("r.created", time, false)
        }
        ("meta", Some("lastModified")) => {
            let time = Semantics { kind: AttributeType::DateTime, case_exact: true, folded: false };
            ("r.last_modified", time, false)
        }
        ("meta", Some("resourceType")) => ("r.kind", Semantics::exact_string(), false),
        _ => return None,
    };
    Some(Column { column, semantics, indexed })
}

/// Whether a search by `filter` reads a handful of rows whatever the
/// tenant's size: an equality on an indexed column (id, externalId, the
/// unique name), alone or and-ed with anything. Such a search is cheap
/// enough to run on the async workers; any other may scan the tenant.
pub fn is_narrow(kind: ResourceKind, filter: &Filter) -> bool {
    match filter {
        Filter::Compare { path, op: CompareOp::Equal, value: CompareValue::String(_) } => {
            resolve(kind, path)
                .and_then(|resolved| column_of(kind, &resolved))
                .is_some_and(|column| column.indexed)
        }
        Filter::And(left, right) => is_narrow(kind, left) || is_narrow(kind, right),
        _ => false,
    }
}

/// Where a path is read from.
enum Scope<'a> {
    /// A resource: columns and `r.document`.
    Resource,
    /// One element of a multi-valued attribute, `alias.value` as JSON text;
    /// `attribute` is its definition, if known.
    Element { alias: String, attribute: Option<&'a Attribute> },
    /// One row of the membership table for a Group's `members`.
    Members { alias: String },
    /// One row of the membership table for a User's `groups`.
    Groups { alias: String },
}

/// How to compare the values a leaf reads.
#[derive(Debug, Clone, Copy)]
struct Semantics {
    kind: AttributeType,
    case_exact: bool,
    /// The column holds folded text already (`name_key`).
    folded: bool,
}

impl Semantics {
    fn of(attribute: Option<&Attribute>) -> Semantics {
        match attribute {
            Some(attribute) => {
                Semantics { kind: attribute.kind, case_exact: attribute.case_exact, folded: false }
            }
            // Attributes no schema defines (custom extensions) compare as
            // case-insensitive strings.
            None => Semantics { kind: AttributeType::String, case_exact: false, folded: false },
        }
    }

    fn exact_string() -> Semantics {
        Semantics { kind: AttributeType::String, case_exact: true, folded: false }
    }
}

struct Translator {
    kind: ResourceKind,
    params: Vec<SqlValue>,
    aliases: u32,
    dialect: Dialect,
}

/// A path into a document: names, and list indexes (a sort reads a
/// list's first value).
#[derive(Debug, Clone)]
struct JsonPath(Vec<Segment>);

#[derive(Debug, Clone)]
enum Segment {
    Key(String),
    Index(u32),
}

fn json_path(schema: Option<&str>, names: &[&str]) -> JsonPath {
    JsonPath(
        schema
            .into_iter()
            .chain(names.iter().copied())
            .map(|name| Segment::Key(name.to_owned()))
            .collect(),
    )
}

impl JsonPath {
    fn key(mut self, name: &str) -> JsonPath {
        self.0.push(Segment::Key(name.to_owned()));
        self
    }

    fn index(mut self, index: u32) -> JsonPath {
        self.0.push(Segment::Index(index));
        self
    }

    /// SQLite's JSON path (`$."name"[0]`), or a PostgreSQL `text[]`
    /// literal (`{"name","0"}`), every element quoted.
    fn render(&self, dialect: Dialect) -> String {
        match dialect {
            Dialect::Sqlite => {
                let mut path = "$".to_owned();
                for segment in &self.0 {
                    match segment {
                        Segment::Key(name) => {
                            path.push_str(".\"");
                            path.push_str(name);
                            path.push('"');
                        }
                        Segment::Index(index) => path.push_str(&format!("[{index}]")),
                    }
                }
                path
            }
            Dialect::Postgres => {
                let elements: Vec<String> = self
                    .0
                    .iter()
                    .map(|segment| {
                        let text = match segment {
                            Segment::Key(name) => name.clone(),
                            Segment::Index(index) => index.to_string(),
                        };
                        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                format!("{{{}}}", elements.join(","))
            }
        }
    }
}

/// Where a JSON leaf reads its values: a document (or an element of one)
/// and, on PostgreSQL, its folded twin.
struct JsonBase {
    document: String,
    folded: String,
}

impl JsonBase {
    fn resource(dialect: Dialect) -> JsonBase {
        match dialect {
            Dialect::Sqlite => {
                JsonBase { document: "r.document".to_owned(), folded: String::new() }
            }
            Dialect::Postgres => {
                JsonBase { document: "r.doc".to_owned(), folded: "r.folded".to_owned() }
            }
        }
    }

    /// An element's object (nothing for a plain value: it has no
    /// sub-attributes to look into).
    fn element(alias: &str) -> JsonBase {
        JsonBase {
            document: format!("CASE WHEN {alias}.type = 'object' THEN {alias}.value END"),
            folded: format!("CASE WHEN {alias}.type = 'object' THEN {alias}.folded END"),
        }
    }
}

/// What a comparison reads: a column (or an expression over columns), or
/// the values a JSON leaf iterates under `alias`.
enum Operand<'a> {
    Column(&'a str),
    Json(&'a str),
}

fn is(name: &str, expected: &str) -> bool {
    name.eq_ignore_ascii_case(expected)
}

impl Translator {
    fn alias(&mut self, prefix: &str) -> String {
        self.aliases += 1;
        format!("{prefix}{}", self.aliases)
    }

    fn param(&mut self, value: SqlValue) -> String {
        // ?1 and ?2 are the tenant and the kind.
        self.params.push(value);
        format!("?{}", self.params.len() + 2)
    }

    /// A path, bound as a parameter in the dialect's form.
    fn path(&mut self, path: &JsonPath) -> String {
        let param = self.param(SqlValue::Text(path.render(self.dialect)));
        match self.dialect {
            Dialect::Sqlite => param,
            Dialect::Postgres => format!("CAST(CAST({param} AS TEXT) AS TEXT[])"),
        }
    }

    fn truth(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "1",
            Dialect::Postgres => "TRUE",
        }
    }

    fn falsity(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "0",
            Dialect::Postgres => "FALSE",
        }
    }

    /// The rows of every value at `path` under `base`, as `alias`.
    fn values(&mut self, base: &JsonBase, path: &JsonPath, alias: &str) -> String {
        let path = self.path(path);
        match self.dialect {
            Dialect::Sqlite => format!("json_each({}, {path}) AS {alias}", base.document),
            Dialect::Postgres => {
                format!("rollcall_values({}, {}, {path}) AS {alias}", base.document, base.folded)
            }
        }
    }

    fn filter(&mut self, filter: &Filter, scope: &Scope<'_>) -> Result<String, QueryError> {
        match filter {
            Filter::And(left, right) => {
                Ok(format!("({}) AND ({})", self.filter(left, scope)?, self.filter(right, scope)?))
            }
            Filter::Or(left, right) => {
                Ok(format!("({}) OR ({})", self.filter(left, scope)?, self.filter(right, scope)?))
            }
            // coalesce: a comparison with NULL is "unknown", and `not`
            // of an attribute that is absent must match.
            Filter::Not(inner) => {
                let inner = self.filter(inner, scope)?;
                Ok(format!("NOT coalesce(({inner}), {})", self.falsity()))
            }
            Filter::Present { path } => self.leaf(scope, path, None),
            // `ne null` is "present".
            Filter::Compare { path, op: CompareOp::NotEqual, value: CompareValue::Null } => {
                self.leaf(scope, path, None)
            }
            Filter::Compare { path, op: CompareOp::NotEqual, value } => {
                let equal = self.leaf(scope, path, Some((CompareOp::Equal, value)))?;
                Ok(format!("NOT coalesce(({equal}), {})", self.falsity()))
            }
            Filter::Compare { path, op, value: CompareValue::Null } => {
                if *op != CompareOp::Equal {
                    return Err(QueryError::InvalidFilter(format!(
                        "only eq and ne compare with null ({path})"
                    )));
                }
                let present = self.leaf(scope, path, None)?;
                Ok(format!("NOT ({present})"))
            }
            Filter::Compare { path, op, value } => self.leaf(scope, path, Some((*op, value))),
            Filter::ValuePath { path, filter } => self.value_path(scope, path, filter),
        }
    }

    /// `path` present (`comparison` None) or compared.
    fn leaf(
        &mut self,
        scope: &Scope<'_>,
        path: &AttrPath,
        comparison: Option<(CompareOp, &CompareValue)>,
    ) -> Result<String, QueryError> {
        match scope {
            Scope::Resource => self.resource_leaf(path, comparison),
            Scope::Element { alias, attribute } => {
                if path.schema.is_some() || path.sub_attribute.is_some() {
                    return Err(QueryError::InvalidFilter(format!(
                        "'{path}' is not a sub-attribute name"
                    )));
                }
                let sub = attribute.and_then(|attribute| attribute.sub_attribute(&path.name));
                if attribute.is_some() && sub.is_none() {
                    return Err(QueryError::InvalidFilter(format!(
                        "'{}' has no sub-attribute '{}'",
                        attribute.map_or("", |a| a.name),
                        path.name
                    )));
                }
                // Only an object element has sub-attributes; a plain value in
                // a list no schema describes is not JSON text to look into.
                let base = JsonBase::element(alias);
                let json = json_path(None, &[sub.map_or(path.name.as_str(), |sub| sub.name)]);
                self.json_leaf(&base, json, Semantics::of(sub), comparison)
            }
            Scope::Members { alias } => {
                let (expression, semantics) = match path.name.as_str() {
                    name if is(name, "value") => {
                        (format!("{alias}.member_id"), Semantics::exact_string())
                    }
                    name if is(name, "type") => self.ascii_folded(&format!("{alias}.member_type")),
                    name if is(name, "display") => {
                        self.display_of(&format!("{alias}.member_id"), alias)
                    }
                    other => {
                        return Err(QueryError::InvalidFilter(format!(
                            "members cannot be filtered by '{other}'"
                        )));
                    }
                };
                self.column_leaf(&expression, semantics, comparison)
            }
            Scope::Groups { alias } => {
                let (expression, semantics) = match path.name.as_str() {
                    name if is(name, "value") => {
                        (format!("{alias}.group_id"), Semantics::exact_string())
                    }
                    name if is(name, "display") => {
                        self.display_of(&format!("{alias}.group_id"), alias)
                    }
                    name if is(name, "type") => self.ascii_folded("'direct'"),
                    other => {
                        return Err(QueryError::InvalidFilter(format!(
                            "groups cannot be filtered by '{other}'"
                        )));
                    }
                };
                self.column_leaf(&expression, semantics, comparison)
            }
        }
    }

    /// The unique name of the member (or group) `id` names, to compare
    /// case-insensitively: SQLite folds it as it reads, PostgreSQL reads
    /// the folded `name_key` that `scim_fold`'s own function wrote.
    fn display_of(&self, id: &str, alias: &str) -> (String, Semantics) {
        match self.dialect {
            Dialect::Sqlite => (
                format!(
                    "(SELECT x.name FROM scim_resources x WHERE x.tenant_id = {alias}.tenant_id AND x.id = {id})"
                ),
                Semantics::of(None),
            ),
            Dialect::Postgres => (
                format!(
                    "(SELECT x.name_key FROM scim_resources x WHERE x.tenant_id = {alias}.tenant_id AND x.id = {id})"
                ),
                Semantics { kind: AttributeType::String, case_exact: false, folded: true },
            ),
        }
    }

    /// A column of ASCII words only rollcall writes (a member's type), to
    /// compare case-insensitively: on PostgreSQL `lower` of ASCII is what
    /// `fold` gives; SQLite folds it with `scim_fold` as any other text.
    fn ascii_folded(&self, column: &str) -> (String, Semantics) {
        match self.dialect {
            Dialect::Sqlite => (column.to_owned(), Semantics::of(None)),
            Dialect::Postgres => (
                format!("lower({column})"),
                Semantics { kind: AttributeType::String, case_exact: false, folded: true },
            ),
        }
    }

    fn resource_leaf(
        &mut self,
        path: &AttrPath,
        comparison: Option<(CompareOp, &CompareValue)>,
    ) -> Result<String, QueryError> {
        let resolved = resolve(self.kind, path);
        if let Some(resolved) = &resolved {
            let name = resolved.attribute.name;
            let sub = resolved.sub_attribute.as_ref().map(|sub| sub.name);
            if let Some(Column { column, semantics, .. }) = column_of(self.kind, resolved) {
                return self.column_leaf(column, semantics, comparison);
            }
            if name == "meta" {
                return Err(QueryError::InvalidFilter(format!("'{path}' cannot be filtered on")));
            }
            let membership = match (self.kind, name) {
                (ResourceKind::Group, "members") => Some(Scope::Members { alias: self.alias("m") }),
                (ResourceKind::User, "groups") => Some(Scope::Groups { alias: self.alias("g") }),
                _ => None,
            };
            if let Some(scope) = membership {
                let inner = match sub {
                    Some(sub) => self.leaf(&scope, &AttrPath::named(sub), comparison)?,
                    None if comparison.is_none() => self.truth().to_owned(),
                    None => self.leaf(&scope, &AttrPath::named("value"), comparison)?,
                };
                return Ok(self.membership_exists(&scope, &inner));
            }
            let attribute = &resolved.attribute;
            if attribute.kind == AttributeType::Complex {
                // `emails.value op x` and `emails op x` are `emails[value op x]`.
                let sub_name = match (sub, comparison) {
                    (Some(sub), _) => sub,
                    (None, None) => {
                        let json = json_path(
                            resolved.schema.filter(|s| *s == ENTERPRISE_USER_SCHEMA),
                            &[name],
                        );
                        return self.json_leaf(
                            &JsonBase::resource(self.dialect),
                            json,
                            Semantics::of(None),
                            None,
                        );
                    }
                    (None, Some(_))
                        if attribute.multi_valued && attribute.sub_attribute("value").is_some() =>
                    {
                        "value"
                    }
                    (None, Some(_)) => {
                        return Err(QueryError::InvalidFilter(format!(
                            "'{path}' is complex: compare one of its sub-attributes"
                        )));
                    }
                };
                if attribute.multi_valued {
                    let alias = self.alias("e");
                    let json = json_path(
                        resolved.schema.filter(|s| *s == ENTERPRISE_USER_SCHEMA),
                        &[name],
                    );
                    let values = self.values(&JsonBase::resource(self.dialect), &json, &alias);
                    let scope = Scope::Element { alias: alias.clone(), attribute: Some(attribute) };
                    let inner = self.leaf(&scope, &AttrPath::named(sub_name), comparison)?;
                    return Ok(format!("EXISTS (SELECT 1 FROM {values} WHERE {inner})"));
                }
                let json = json_path(
                    resolved.schema.filter(|s| *s == ENTERPRISE_USER_SCHEMA),
                    &[name, sub_name],
                );
                return self.json_leaf(
                    &JsonBase::resource(self.dialect),
                    json,
                    Semantics::of(resolved.sub_attribute),
                    comparison,
                );
            }
            let json = json_path(resolved.schema.filter(|s| *s == ENTERPRISE_USER_SCHEMA), &[name]);
            return self.json_leaf(
                &JsonBase::resource(self.dialect),
                json,
                Semantics::of(Some(attribute)),
                comparison,
            );
        }
        // Not in any schema: a custom extension's attribute, read as sent.
        let mut names = vec![path.name.as_str()];
        names.extend(path.sub_attribute.as_deref());
        let json = json_path(path.schema.as_deref(), &names);
        self.json_leaf(&JsonBase::resource(self.dialect), json, Semantics::of(None), comparison)
    }

    /// The expression a sort orders by: an indexed column where there is
    /// one, else the attribute's JSON (the first value of a multi-valued
    /// one), folded when it is a case-insensitive string.
    fn order(&mut self, path: &AttrPath) -> Result<String, QueryError> {
        let resolved = resolve(self.kind, path);
        let unique_name = match self.kind {
            ResourceKind::User => "userName",
            ResourceKind::Group => "displayName",
        };
        let Some(resolved) = resolved else {
            let mut names = vec![path.name.as_str()];
            names.extend(path.sub_attribute.as_deref());
            let json = json_path(path.schema.as_deref(), &names);
            return Ok(self.sort_key(&json, AttributeType::String, true));
        };
        let name = resolved.attribute.name;
        let sub = resolved.sub_attribute.as_ref().map(|sub| sub.name);
        match (name, sub) {
            ("id", None) => return Ok("r.id".to_owned()),
            ("externalId", None) => return Ok("r.external_id".to_owned()),
            ("meta", Some("created")) => return Ok("r.created_position".to_owned()),
            ("meta", Some("lastModified")) => return Ok("r.last_modified".to_owned()),
            (name, None)
                if name == unique_name
                    && resolved.schema.is_some_and(|s| s != ENTERPRISE_USER_SCHEMA) =>
            {
                return Ok("r.name_key".to_owned());
            }
            ("meta", _) | ("members", _) | ("groups", _) => {
                return Err(QueryError::InvalidFilter(format!("cannot sort by '{path}'")));
            }
            _ => {}
        }
        let schema = resolved.schema.filter(|s| *s == ENTERPRISE_USER_SCHEMA);
        let attribute = resolved.attribute;
        let mut json = json_path(schema, &[name]);
        if attribute.multi_valued {
            json = json.index(0);
        }
        let target = match (attribute.kind, sub) {
            (AttributeType::Complex, Some(sub)) => {
                json = json.key(sub);
                resolved.target()
            }
            (AttributeType::Complex, None) if attribute.sub_attribute("value").is_some() => {
                json = json.key("value");
                attribute.sub_attribute("value").unwrap_or(attribute)
            }
            (AttributeType::Complex, None) => {
                return Err(QueryError::InvalidFilter(format!(
                    "cannot sort by the complex attribute '{path}'"
                )));
            }
            _ => attribute,
        };
        let folds = matches!(target.kind, AttributeType::String | AttributeType::Reference)
            && !target.case_exact;
        Ok(self.sort_key(&json, target.kind, folds))
    }

    /// The value at `json` to order by: folded for a case-insensitive
    /// string. SQLite orders `json_extract`'s typed values (numbers as
    /// numbers, text bytewise, other types' values apart); PostgreSQL is
    /// given the same order, by the attribute's type.
    fn sort_key(&mut self, json: &JsonPath, kind: AttributeType, folds: bool) -> String {
        let path = self.path(json);
        match self.dialect {
            Dialect::Sqlite if folds => format!("scim_fold(json_extract(r.document, {path}))"),
            Dialect::Sqlite => format!("json_extract(r.document, {path})"),
            Dialect::Postgres => {
                let (column, wanted) = match kind {
                    _ if folds => ("r.folded", "string"),
                    AttributeType::Integer | AttributeType::Decimal => ("r.doc", "number"),
                    AttributeType::Boolean => ("r.doc", "boolean"),
                    _ => ("r.doc", "string"),
                };
                let value = format!(
                    "CASE WHEN jsonb_typeof({column} #> {path}) = '{wanted}' THEN {column} #>> {path} END"
                );
                if wanted == "number" {
                    format!("({value})::numeric")
                } else {
                    format!("({value}) COLLATE \"C\"")
                }
            }
        }
    }

    fn membership_exists(&self, scope: &Scope<'_>, inner: &str) -> String {
        match scope {
            Scope::Members { alias } => format!(
                "EXISTS (SELECT 1 FROM scim_members {alias} WHERE {alias}.tenant_id = r.tenant_id AND {alias}.group_id = r.id AND ({inner}))"
            ),
            Scope::Groups { alias } => format!(
                "EXISTS (SELECT 1 FROM scim_members {alias} WHERE {alias}.tenant_id = r.tenant_id AND {alias}.member_id = r.id AND ({inner}))"
            ),
            Scope::Resource | Scope::Element { .. } => inner.to_owned(),
        }
    }

    /// A value read from JSON: every value at `json` under `base` (one for
    /// a scalar, each element of a list) is tried.
    fn json_leaf(
        &mut self,
        base: &JsonBase,
        json: JsonPath,
        semantics: Semantics,
        comparison: Option<(CompareOp, &CompareValue)>,
    ) -> Result<String, QueryError> {
        let alias = self.alias("v");
        let values = self.values(base, &json, &alias);
        let test = match (comparison, self.dialect) {
            (None, Dialect::Sqlite) => format!(
                "{alias}.type <> 'null' AND NOT ({alias}.type = 'text' AND {alias}.value = '')"
            ),
            // An object is present when one of its members is, as SQLite's
            // `json_each` walks an object's members.
            (None, Dialect::Postgres) => format!(
                "{alias}.type <> 'null' AND {alias}.value <> '\"\"'::jsonb \
                 AND NOT ({alias}.type = 'object' AND NOT EXISTS (SELECT 1 FROM jsonb_each({alias}.value) AS o \
                 WHERE jsonb_typeof(o.value) <> 'null' AND o.value <> '\"\"'::jsonb))"
            ),
            (Some((op, value)), _) => self.compare(Operand::Json(&alias), semantics, op, value)?,
        };
        Ok(format!("EXISTS (SELECT 1 FROM {values} WHERE {test})"))
    }

    fn column_leaf(
        &mut self,
        column: &str,
        semantics: Semantics,
        comparison: Option<(CompareOp, &CompareValue)>,
    ) -> Result<String, QueryError> {
        match comparison {
            None => Ok(format!("({column} IS NOT NULL AND {column} <> '')")),
            Some((op, value)) => self.compare(Operand::Column(column), semantics, op, value),
        }
    }

    /// The SQL that reads an operand as a value of `kind` (text as text,
    /// folded or not; numbers, booleans and instants as themselves), or
    /// NULL where it is of another JSON type, as SQLite's typed values
    /// never equal another type's.
    fn operand(&self, operand: &Operand<'_>, kind: AttributeType, folded: bool) -> String {
        match (self.dialect, operand) {
            (Dialect::Sqlite, Operand::Column(column)) => (*column).to_owned(),
            (Dialect::Sqlite, Operand::Json(alias)) => format!("{alias}.value"),
            (Dialect::Postgres, Operand::Column(column)) => match kind {
                AttributeType::DateTime => format!("rollcall_instant({column})"),
                _ => (*column).to_owned(),
            },
            (Dialect::Postgres, Operand::Json(alias)) => match kind {
                AttributeType::Boolean => {
                    format!("CASE WHEN {alias}.type = 'boolean' THEN {alias}.value END")
                }
                AttributeType::Integer | AttributeType::Decimal => format!(
                    "CASE WHEN {alias}.type = 'number' THEN ({alias}.value #>> '{{}}')::numeric END"
                ),
                AttributeType::DateTime => format!(
                    "rollcall_instant(CASE WHEN {alias}.type = 'string' THEN {alias}.value #>> '{{}}' END)"
                ),
                _ => {
                    let column = if folded { "folded" } else { "value" };
                    format!(
                        "(CASE WHEN {alias}.type = 'string' THEN {alias}.{column} #>> '{{}}' END) COLLATE \"C\""
                    )
                }
            },
        }
    }

    fn compare(
        &mut self,
        operand: Operand<'_>,
        semantics: Semantics,
        op: CompareOp,
        value: &CompareValue,
    ) -> Result<String, QueryError> {
        let keyword = op.keyword();
        let postgres = self.dialect == Dialect::Postgres;
        match semantics.kind {
            AttributeType::Boolean => {
                let truth = match value {
                    CompareValue::Bool(truth) => *truth,
                    other => {
                        return Err(QueryError::InvalidFilter(format!(
                            "a boolean compares with true or false, not {other}"
                        )));
                    }
                };
                if op != CompareOp::Equal {
                    return Err(QueryError::InvalidFilter(format!(
                        "booleans compare only with eq and ne, not {keyword}"
                    )));
                }
                let expression = self.operand(&operand, AttributeType::Boolean, false);
                if postgres {
                    let literal = if truth { "'true'::jsonb" } else { "'false'::jsonb" };
                    return Ok(format!("{expression} = {literal}"));
                }
                let param = self.param(SqlValue::Integer(i64::from(truth)));
                Ok(format!("{expression} = {param}"))
            }
            AttributeType::Integer | AttributeType::Decimal => {
                let CompareValue::Number(number) = value else {
                    return Err(QueryError::InvalidFilter(format!(
                        "a number compares with a number, not {value}"
                    )));
                };
                let operator = ordering_operator(op).ok_or_else(|| {
                    QueryError::InvalidFilter(format!("numbers cannot be compared with {keyword}"))
                })?;
                let bound = match number.as_i64() {
                    Some(integer) => SqlValue::Integer(integer),
                    None => SqlValue::Real(number.as_f64().unwrap_or(f64::NAN)),
                };
                let expression = self.operand(&operand, semantics.kind, false);
                let param = self.param(bound);
                Ok(format!("{expression} {operator} {param}"))
            }
            AttributeType::DateTime => {
                let operator = ordering_operator(op).ok_or_else(|| {
                    QueryError::InvalidFilter(format!("dates cannot be compared with {keyword}"))
                })?;
                let CompareValue::String(text) = value else {
                    return Err(QueryError::InvalidFilter(format!(
                        "a date compares with a date string, not {value}"
                    )));
                };
                let instant: jiff::Timestamp = text.parse().map_err(|_| {
                    QueryError::InvalidFilter(format!("{text:?} is not an RFC 3339 date and time"))
                })?;
                let expression = self.operand(&operand, AttributeType::DateTime, false);
                let param = self.param(SqlValue::Text(events::time::format_millis(instant)));
                if postgres {
                    return Ok(format!("{expression} {operator} rollcall_instant({param})"));
                }
                Ok(format!("julianday({expression}) {operator} julianday({param})"))
            }
            AttributeType::String
            | AttributeType::Reference
            | AttributeType::Binary
            | AttributeType::Complex => {
                let text = match value {
                    CompareValue::String(text) => text.clone(),
                    CompareValue::Number(number) => number.to_string(),
                    CompareValue::Bool(truth) => truth.to_string(),
                    CompareValue::Null => String::new(),
                };
                let (left, right) = if semantics.case_exact {
                    (self.operand(&operand, semantics.kind, false), text)
                } else if semantics.folded {
                    (self.operand(&operand, semantics.kind, false), fold(&text))
                } else if postgres {
                    let Operand::Json(_) = operand else {
                        return Err(QueryError::InvalidFilter(
                            "this attribute cannot be compared case-insensitively".to_owned(),
                        ));
                    };
                    (self.operand(&operand, semantics.kind, true), fold(&text))
                } else {
                    let expression = self.operand(&operand, semantics.kind, false);
                    (format!("scim_fold({expression})"), fold(&text))
                };
                let characters = i64::try_from(right.chars().count()).unwrap_or(i64::MAX);
                match op {
                    CompareOp::Contains => {
                        let param = self.param(SqlValue::Text(right));
                        let find = if postgres { "strpos" } else { "instr" };
                        Ok(format!("{find}({left}, {param}) > 0"))
                    }
                    CompareOp::StartsWith if postgres => {
                        let param = self.param(SqlValue::Text(right));
                        Ok(format!("starts_with({left}, {param})"))
                    }
                    CompareOp::StartsWith => {
                        let length = self.param(SqlValue::Integer(characters));
                        let param = self.param(SqlValue::Text(right));
                        Ok(format!("substr({left}, 1, {length}) = {param}"))
                    }
                    CompareOp::EndsWith if characters == 0 => Ok(format!("{left} IS NOT NULL")),
                    CompareOp::EndsWith if postgres => {
                        let length = self.param(SqlValue::Integer(characters));
                        let param = self.param(SqlValue::Text(right));
                        Ok(format!(
                            "right({left}, CAST(CAST({length} AS BIGINT) AS INTEGER)) = {param}"
                        ))
                    }
                    CompareOp::EndsWith => {
                        let length = self.param(SqlValue::Integer(-characters));
                        let param = self.param(SqlValue::Text(right));
                        Ok(format!("substr({left}, {length}) = {param}"))
                    }
                    other => {
                        let operator = ordering_operator(other).unwrap_or("=");
                        let param = self.param(SqlValue::Text(right));
                        Ok(format!("{left} {operator} {param}"))
                    }
                }
            }
        }
    }

    fn value_path(
        &mut self,
        scope: &Scope<'_>,
        path: &AttrPath,
        inner: &Filter,
    ) -> Result<String, QueryError> {
        if !matches!(scope, Scope::Resource) {
            return Err(QueryError::InvalidFilter(
                "a value filter cannot contain another value path".to_owned(),
            ));
        }
        let resolved = resolve(self.kind, path);
        match resolved.as_ref().map(|resolved| (resolved.attribute.name, self.kind)) {
            Some(("members", ResourceKind::Group)) => {
                let scope = Scope::Members { alias: self.alias("m") };
                let condition = self.filter(inner, &scope)?;
                return Ok(self.membership_exists(&scope, &condition));
            }
            Some(("groups", ResourceKind::User)) => {
                let scope = Scope::Groups { alias: self.alias("g") };
                let condition = self.filter(inner, &scope)?;
                return Ok(self.membership_exists(&scope, &condition));
            }
            _ => {}
        }
        let (json, attribute) = match &resolved {
            Some(resolved) => {
                if !resolved.attribute.multi_valued
                    || resolved.attribute.kind != AttributeType::Complex
                {
                    return Err(QueryError::InvalidFilter(format!(
                        "'{path}' is not a multi-valued complex attribute"
                    )));
                }
                let schema = resolved.schema.filter(|s| *s == ENTERPRISE_USER_SCHEMA);
                (json_path(schema, &[resolved.attribute.name]), Some(resolved.attribute))
            }
            None => (json_path(path.schema.as_deref(), &[path.name.as_str()]), None),
        };
        let alias = self.alias("e");
        let values = self.values(&JsonBase::resource(self.dialect), &json, &alias);
        let scope = Scope::Element { alias: alias.clone(), attribute };
        let condition = self.filter(inner, &scope)?;
        Ok(format!("EXISTS (SELECT 1 FROM {values} WHERE {condition})"))
    }
}

fn ordering_operator(op: CompareOp) -> Option<&'static str> {
    match op {
        CompareOp::Equal => Some("="),
        CompareOp::GreaterThan => Some(">"),
        CompareOp::GreaterOrEqual => Some(">="),
        CompareOp::LessThan => Some("<"),
        CompareOp::LessOrEqual => Some("<="),
        CompareOp::NotEqual | CompareOp::Contains | CompareOp::StartsWith | CompareOp::EndsWith => {
            None
        }
    }
}
