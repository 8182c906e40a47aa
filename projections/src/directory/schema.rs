//! The SCIM schemas rollcall serves: core User, the Enterprise User
//! extension and Group (RFC 7643 sections 4 and 7), as data.
//!
//! Each attribute carries its characteristics (type, multi-valued,
//! case-exact, mutability, returned, uniqueness). They decide how a filter
//! compares values, which case an attribute name is written back in, what a
//! response leaves out, and what `/Schemas` publishes. Attribute names are
//! matched case-insensitively everywhere, as RFC 7643 section 2.1 asks.

use std::sync::LazyLock;

use super::filter::AttrPath;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// An attribute's data type (RFC 7643 section 2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeType {
    String,
    Boolean,
    Decimal,
    Integer,
    DateTime,
    Binary,
    Reference,
    Complex,
}

impl AttributeType {
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeType::String => "string",
            AttributeType::Boolean => "boolean",
            AttributeType::Decimal => "decimal",
            AttributeType::Integer => "integer",
            AttributeType::DateTime => "dateTime",
            AttributeType::Binary => "binary",
            AttributeType::Reference => "reference",
            AttributeType::Complex => "complex",
        }
    }
}

/// Who may change an attribute (RFC 7643 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    ReadOnly,
    ReadWrite,
    Immutable,
    WriteOnly,
}

impl Mutability {
    pub fn as_str(self) -> &'static str {
        match self {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
            Mutability::WriteOnly => "writeOnly",
        }
    }
}

/// When an attribute is returned (RFC 7643 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    Always,
    Never,
    Default,
    Request,
}

impl Returned {
    pub fn as_str(self) -> &'static str {
        match self {
            Returned::Always => "always",
            Returned::Never => "never",
            Returned::Default => "default",
            Returned::Request => "request",
        }
    }
}

/// How unique an attribute's value is (RFC 7643 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uniqueness {
    None,
    Server,
    Global,
}

impl Uniqueness {
    pub fn as_str(self) -> &'static str {
        match self {
            Uniqueness::None => "none",
            Uniqueness::Server => "server",
            Uniqueness::Global => "global",
        }
    }
}

/// One attribute's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The canonical name, in the case responses use.
    pub name: &'static str,
    pub kind: AttributeType,
    pub multi_valued: bool,
    pub required: bool,
    pub case_exact: bool,
    pub mutability: Mutability,
    pub returned: Returned,
    pub uniqueness: Uniqueness,
    pub canonical_values: &'static [&'static str],
    pub reference_types: &'static [&'static str],
    pub description: &'static str,
    pub sub_attributes: Vec<Attribute>,
}

impl Attribute {
    /// A single-valued, optional, case-insensitive, read-write string: the
    /// most common shape; the builders below adjust it.
    fn new(name: &'static str, kind: AttributeType, description: &'static str) -> Attribute {
        Attribute {
            name,
            kind,
            multi_valued: false,
            required: false,
            case_exact: false,
            mutability: Mutability::ReadWrite,
            returned: Returned::Default,
            uniqueness: Uniqueness::None,
            canonical_values: &[],
            reference_types: &[],
            description,
            sub_attributes: Vec::new(),
        }
    }

    fn string(name: &'static str, description: &'static str) -> Attribute {
        Attribute::new(name, AttributeType::String, description)
    }

    fn complex(
        name: &'static str,
        description: &'static str,
        sub_attributes: Vec<Attribute>,
    ) -> Attribute {
        Attribute { sub_attributes, ..Attribute::new(name, AttributeType::Complex, description) }
    }

    fn multi(self) -> Attribute {
        Attribute { multi_valued: true, ..self }
    }

    fn required(self) -> Attribute {
        Attribute { required: true, ..self }
    }

    fn case_exact(self) -> Attribute {
        Attribute { case_exact: true, ..self }
    }

    fn mutability(self, mutability: Mutability) -> Attribute {
        Attribute { mutability, ..self }
    }

    fn returned(self, returned: Returned) -> Attribute {
        Attribute { returned, ..self }
    }

    fn unique(self) -> Attribute {
        Attribute { uniqueness: Uniqueness::Server, ..self }
    }

    fn canonical(self, canonical_values: &'static [&'static str]) -> Attribute {
        Attribute { canonical_values, ..self }
    }

    fn references(self, reference_types: &'static [&'static str]) -> Attribute {
        Attribute { reference_types, ..self }
    }

    /// The sub-attribute named `name`, in any case.
    pub fn sub_attribute(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes.iter().find(|attribute| attribute.name.eq_ignore_ascii_case(name))
    }
}

/// A schema: an id (URN), a name, and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub attributes: Vec<Attribute>,
}

impl Schema {
    /// The top-level attribute named `name`, in any case.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|attribute| attribute.name.eq_ignore_ascii_case(name))
    }
}

/// The multi-valued "value/display/type/primary" shape RFC 7643 uses for
/// emails, phone numbers, ims, photos, entitlements and roles.
fn typed_values(
    name: &'static str,
    description: &'static str,
    value: Attribute,
    types: &'static [&'static str],
) -> Attribute {
    Attribute::complex(
        name,
        description,
        vec![
            value,
            Attribute::string(
                "display",
                "A human-readable name, primarily used for display purposes.",
            )
            .mutability(Mutability::ReadWrite),
            Attribute::string("type", "A label indicating the attribute's function.")
                .canonical(types),
            Attribute::new(
                "primary",
                AttributeType::Boolean,
                "Indicates the 'primary' or preferred value.",
            ),
        ],
    )
    .multi()
}

/// `id`, `externalId` and `meta`: on every resource (RFC 7643 section 3.1).
/// `id`, `externalId` and `meta`, built once.
pub fn common_attributes() -> &'static [Attribute] {
    static COMMON: LazyLock<Vec<Attribute>> = LazyLock::new(build_common_attributes);
    &COMMON
}

fn build_common_attributes() -> Vec<Attribute> {
    vec![
        Attribute::string(
            "id",
            "A unique identifier for the resource, assigned by the service provider.",
        )
        .case_exact()
        .mutability(Mutability::ReadOnly)
        .returned(Returned::Always)
        .unique(),
        Attribute::string(
            "externalId",
            "An identifier for the resource as defined by the provisioning client.",
        )
        .case_exact(),
        Attribute::complex(
            "meta",
            "Resource metadata.",
            vec![
                Attribute::string("resourceType", "The name of the resource type of the resource.")
                    .case_exact()
                    .mutability(Mutability::ReadOnly),
                Attribute::new("created", AttributeType::DateTime, "When the resource was added.")
                    .mutability(Mutability::ReadOnly),
                Attribute::new(
                    "lastModified",
                    AttributeType::DateTime,
                    "When the resource was last updated.",
                )
                .mutability(Mutability::ReadOnly),
                Attribute::new("location", AttributeType::Reference, "The URI of the resource.")
                    .case_exact()
                    .mutability(Mutability::ReadOnly)
                    .references(&["uri"]),
                Attribute::string("version", "The version (ETag) of the resource.")
                    .case_exact()
                    .mutability(Mutability::ReadOnly),
            ],
        )
        .mutability(Mutability::ReadOnly),
    ]
}

/// The core User schema (RFC 7643 section 4.1), built once.
pub fn user_schema() -> &'static Schema {
    static USER: LazyLock<Schema> = LazyLock::new(build_user_schema);
    &USER
}

fn build_user_schema() -> Schema {
    use Attribute as A;
    let work_home_other: &'static [&'static str] = &["work", "home", "other"];
    Schema {
        id: USER_SCHEMA,
        name: "User",
        description: "User Account",
        attributes: vec![
            A::string("userName", "Unique identifier for the User, used to authenticate.")
                .required()
                .unique(),
            A::complex(
                "name",
                "The components of the user's real name.",
                vec![
                    A::string("formatted", "The full name, formatted for display."),
                    A::string("familyName", "The family name of the User."),
                    A::string("givenName", "The given name of the User."),
                    A::string("middleName", "The middle name(s) of the User."),
                    A::string("honorificPrefix", "The honorific prefix(es) of the User."),
                    A::string("honorificSuffix", "The honorific suffix(es) of the User."),
                ],
            ),
            A::string("displayName", "The name of the User, suitable for display to end-users."),
            A::string("nickName", "The casual way to address the user."),
            A::new(
                "profileUrl",
                AttributeType::Reference,
                "A fully qualified URL to the User's online profile.",
            )
            .references(&["external"]),
            A::string("title", "The user's title, such as \"Vice President\"."),
            A::string("userType", "The relationship between the organization and the user."),
            A::string("preferredLanguage", "The User's preferred written or spoken language."),
            A::string("locale", "The User's default location for localisation."),
            A::string("timezone", "The User's time zone in the Olson time zone database format."),
            A::new("active", AttributeType::Boolean, "The User's administrative status."),
            A::string("password", "The User's cleartext password.")
                .mutability(Mutability::WriteOnly)
                .returned(Returned::Never),
            typed_values(
                "emails",
                "Email addresses for the user.",
                A::string("value", "An email address."),
                work_home_other,
            ),
            typed_values(
                "phoneNumbers",
                "Phone numbers for the User.",
                A::string("value", "A phone number."),
                &["work", "home", "mobile", "fax", "pager", "other"],
            ),
            typed_values(
                "ims",
                "Instant messaging addresses for the User.",
                A::string("value", "An instant messaging address."),
                &["aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"],
            ),
            typed_values(
                "photos",
                "URLs of photos of the User.",
                A::new("value", AttributeType::Reference, "The URL of a photo of the User.")
                    .references(&["external"]),
                &["photo", "thumbnail"],
            ),
            A::complex(
                "addresses",
                "A physical mailing address for this User.",
                vec![
                    A::string("formatted", "The full mailing address, formatted for display."),
                    A::string("streetAddress", "The full street address component."),
                    A::string("locality", "The city or locality component."),
                    A::string("region", "The state or region component."),
                    A::string("postalCode", "The zip code or postal code component."),
                    A::string("country", "The country name component."),
                    A::string("type", "A label indicating the attribute's function.")
                        .canonical(work_home_other),
                    A::new("primary", AttributeType::Boolean, "Indicates the primary address."),
                ],
            )
            .multi(),
            A::complex(
                "groups",
                "A list of groups to which the user belongs.",
                vec![
                    A::string("value", "The identifier of the User's group.")
                        .mutability(Mutability::ReadOnly),
                    A::new("$ref", AttributeType::Reference, "The URI of the Group.")
                        .mutability(Mutability::ReadOnly)
                        .references(&["User", "Group"]),
                    A::string("display", "A human-readable name.").mutability(Mutability::ReadOnly),
                    A::string("type", "How the membership was derived.")
                        .mutability(Mutability::ReadOnly)
                        .canonical(&["direct", "indirect"]),
                ],
            )
            .multi()
            .mutability(Mutability::ReadOnly),
            typed_values(
                "entitlements",
                "A list of entitlements for the User.",
                A::string("value", "The value of an entitlement."),
                &[],
            ),
            typed_values(
                "roles",
                "A list of roles for the User.",
                A::string("value", "The value of a role."),
                &[],
            ),
            typed_values(
                "x509Certificates",
                "A list of certificates issued to the User.",
                A::new("value", AttributeType::Binary, "The value of an X.509 certificate."),
                &[],
            ),
        ],
    }
}

/// The enterprise User extension (RFC 7643 section 4.3), built once.
pub fn enterprise_user_schema() -> &'static Schema {
    static ENTERPRISE: LazyLock<Schema> = LazyLock::new(build_enterprise_user_schema);
    &ENTERPRISE
}

fn build_enterprise_user_schema() -> Schema {
    use Attribute as A;
    Schema {
        id: ENTERPRISE_USER_SCHEMA,
        name: "EnterpriseUser",
        description: "Enterprise User",
        attributes: vec![
            A::string("employeeNumber", "Numeric or alphanumeric identifier assigned to a person."),
            A::string("costCenter", "Identifies the name of a cost center."),
            A::string("organization", "Identifies the name of an organization."),
            A::string("division", "Identifies the name of a division."),
            A::string("department", "Identifies the name of a department."),
            A::complex(
                "manager",
                "The User's manager.",
                vec![
                    A::string(
                        "value",
                        "The id of the SCIM resource representing the User's manager.",
                    ),
                    A::new(
                        "$ref",
                        AttributeType::Reference,
                        "The URI of the SCIM resource representing the User's manager.",
                    )
                    .references(&["User"]),
                    A::string("displayName", "The displayName of the User's manager.")
                        .mutability(Mutability::ReadOnly),
                ],
            ),
        ],
    }
}

/// The core Group schema (RFC 7643 section 4.2), built once.
pub fn group_schema() -> &'static Schema {
    static GROUP: LazyLock<Schema> = LazyLock::new(build_group_schema);
    &GROUP
}

fn build_group_schema() -> Schema {
    use Attribute as A;
    Schema {
        id: GROUP_SCHEMA,
        name: "Group",
        description: "Group",
        attributes: vec![
            A::string("displayName", "A human-readable name for the Group.").required().unique(),
            A::complex(
                "members",
                "A list of members of the Group.",
                vec![
                    A::string("value", "Identifier of the member of this Group.")
                        .case_exact()
                        .mutability(Mutability::Immutable),
                    A::new("$ref", AttributeType::Reference, "The URI of the member resource.")
                        .mutability(Mutability::Immutable)
                        .references(&["User", "Group"]),
                    A::string("display", "A human-readable name for the member.")
                        .mutability(Mutability::ReadOnly),
                    A::string("type", "The type of the member.")
                        .mutability(Mutability::Immutable)
                        .canonical(&["User", "Group"]),
                ],
            )
            .multi(),
        ],
    }
}

/// The kinds of resource rollcall serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    User,
    Group,
}

impl ResourceKind {
    pub fn core_schema(self) -> &'static Schema {
        match self {
            ResourceKind::User => user_schema(),
            ResourceKind::Group => group_schema(),
        }
    }

    /// The extension schemas this kind of resource may carry.
    pub fn extension_schemas(self) -> &'static [&'static Schema] {
        static USER_EXTENSIONS: LazyLock<[&'static Schema; 1]> =
            LazyLock::new(|| [enterprise_user_schema()]);
        match self {
            ResourceKind::User => &*USER_EXTENSIONS,
            ResourceKind::Group => &[],
        }
    }
}

/// Where a path lands in the schemas of a resource kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The URN of the schema holding the attribute (`None` for the common
    /// attributes `id`, `externalId`, `meta`).
    pub schema: Option<&'static str>,
    pub attribute: &'static Attribute,
    pub sub_attribute: Option<&'static Attribute>,
}

impl Resolved {
    /// The definition the path ends at: the sub-attribute if named.
    pub fn target(&self) -> &'static Attribute {
        self.sub_attribute.unwrap_or(self.attribute)
    }
}

/// Resolves a path against a resource kind's schemas, case-insensitively.
/// An unqualified name is looked up in the common attributes, then the core
/// schema, then the extensions (Entra ID sends `manager` bare); a qualified
/// one only in the schema its URN names. `None` means the path names no
/// attribute rollcall knows (an unknown extension, say).
pub fn resolve(kind: ResourceKind, path: &AttrPath) -> Option<Resolved> {
    let core = kind.core_schema();
    let (schema_id, attribute) = match &path.schema {
        None => {
            let common =
                common_attributes().iter().find(|a| a.name.eq_ignore_ascii_case(&path.name));
            match (common, core.attribute(&path.name)) {
                (Some(common), _) => (None, common),
                (None, Some(attribute)) => (Some(core.id), attribute),
                (None, None) => kind.extension_schemas().iter().find_map(|extension| {
                    Some((Some(extension.id), extension.attribute(&path.name)?))
                })?,
            }
        }
        Some(urn) if urn.eq_ignore_ascii_case(core.id) => {
            (Some(core.id), core.attribute(&path.name)?)
        }
        Some(urn) => {
            let extension = kind
                .extension_schemas()
                .iter()
                .find(|schema| schema.id.eq_ignore_ascii_case(urn))?;
            (Some(extension.id), extension.attribute(&path.name)?)
        }
    };
    let sub_attribute = match &path.sub_attribute {
        None => None,
        Some(name) => Some(attribute.sub_attribute(name)?),
    };
    Some(Resolved { schema: schema_id, attribute, sub_attribute })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(schema: Option<&str>, name: &str, sub: Option<&str>) -> AttrPath {
        AttrPath {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
            sub_attribute: sub.map(str::to_owned),
        }
    }

    #[test]
    fn names_resolve_case_insensitively_to_their_canonical_case() {
        let resolved = resolve(ResourceKind::User, &path(None, "USERNAME", None)).unwrap();
        assert_eq!(resolved.target().name, "userName");
        assert_eq!(resolved.schema, Some(USER_SCHEMA));
        assert!(resolved.target().required && !resolved.target().case_exact);
        let given = resolve(ResourceKind::User, &path(None, "name", Some("GIVENNAME"))).unwrap();
        assert_eq!(given.target().name, "givenName");
        let modified =
            resolve(ResourceKind::Group, &path(None, "meta", Some("lastmodified"))).unwrap();
        assert_eq!((modified.schema, modified.target().kind), (None, AttributeType::DateTime));
        let id = resolve(ResourceKind::User, &path(None, "id", None)).unwrap();
        assert!(id.target().case_exact && id.target().mutability == Mutability::ReadOnly);
    }

    #[test]
    fn urns_select_their_schema_only() {
        let manager = resolve(
            ResourceKind::User,
            &path(Some(ENTERPRISE_USER_SCHEMA), "manager", Some("value")),
        )
        .unwrap();
        assert_eq!(manager.schema, Some(ENTERPRISE_USER_SCHEMA));
        assert_eq!(manager.target().name, "value");
        let core = resolve(
            ResourceKind::User,
            &path(Some(&USER_SCHEMA.to_uppercase()), "emails", Some("type")),
        )
        .unwrap();
        assert_eq!(core.target().canonical_values, &["work", "home", "other"]);
        let department = resolve(ResourceKind::User, &path(None, "department", None)).unwrap();
        assert_eq!(
            department.schema,
            Some(ENTERPRISE_USER_SCHEMA),
            "a bare name no core attribute has is the extension's"
        );
        let manager = resolve(ResourceKind::User, &path(None, "manager", Some("value"))).unwrap();
        assert_eq!(
            (manager.schema, manager.target().name),
            (Some(ENTERPRISE_USER_SCHEMA), "value")
        );
        assert_eq!(resolve(ResourceKind::Group, &path(None, "department", None)), None);
        assert_eq!(
            resolve(ResourceKind::Group, &path(Some(ENTERPRISE_USER_SCHEMA), "manager", None)),
            None
        );
        let custom = "urn:ietf:params:scim:schemas:extension:2.0:Metadata";
        assert_eq!(
            resolve(ResourceKind::User, &path(Some(custom), "costCenter", None)),
            None,
            "unknown extensions are not resolved"
        );
        assert_eq!(resolve(ResourceKind::User, &path(None, "name", Some("nope"))), None);
    }

    #[test]
    fn the_schemas_say_what_rfc_7643_says() {
        let user = user_schema();
        let emails = user.attribute("emails").unwrap();
        assert!(emails.multi_valued && emails.kind == AttributeType::Complex);
        assert_eq!(emails.sub_attribute("primary").unwrap().kind, AttributeType::Boolean);
        let password = user.attribute("password").unwrap();
        assert_eq!(
            (password.mutability, password.returned),
            (Mutability::WriteOnly, Returned::Never)
        );
        assert_eq!(user.attribute("groups").unwrap().mutability, Mutability::ReadOnly);
        let group = group_schema();
        let members = group.attribute("members").unwrap();
        assert!(members.multi_valued);
        assert_eq!(members.sub_attribute("value").unwrap().mutability, Mutability::Immutable);
        assert_eq!(group.attribute("displayName").unwrap().uniqueness, Uniqueness::Server);
        // Every sub-attribute is simple: SCIM allows one level of nesting.
        for schema in [user, enterprise_user_schema(), group] {
            for attribute in &schema.attributes {
                assert_eq!(
                    attribute.kind == AttributeType::Complex,
                    !attribute.sub_attributes.is_empty(),
                    "{}",
                    attribute.name
                );
                for sub in &attribute.sub_attributes {
                    assert!(
                        sub.sub_attributes.is_empty() && sub.kind != AttributeType::Complex,
                        "{}.{}",
                        attribute.name,
                        sub.name
                    );
                }
            }
        }
    }
}
