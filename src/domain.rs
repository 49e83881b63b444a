//! Newtypes that parse at the edge: once a value is one of these, it is valid.
//! Secrets (`SessionToken`, `OneTimeLink`, `ApiKey`) never print themselves.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Why a raw value was refused, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn refuse(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

macro_rules! text_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // Lets an id go wherever Persona's text form is taken (the simulator's API).
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(s: String) -> Result<Self, ParseError> {
                Self::parse(&s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }
    };
}

text_newtype!(
    /// The application's user id (`users.id`), e.g. `usr_ABC123`. Never sent to Persona.
    UserId
);
text_newtype!(
    /// An e-mail address that passed a conservative syntax check.
    Email
);
text_newtype!(
    /// The opaque, random, stable id the daemon gives a user towards Persona (`ref_…`).
    ReferenceId
);
text_newtype!(
    /// A Persona inquiry id (`inq_…`).
    InquiryId
);
text_newtype!(
    /// A Persona inquiry template id (`itmpl_…`).
    TemplateId
);
text_newtype!(
    /// A Persona inquiry template version id (`itmplv_…`).
    TemplateVersionId
);
text_newtype!(
    /// A Persona environment id (`env_…`).
    EnvironmentId
);

fn check_token_chars(kind: &str, s: &str) -> Result<(), ParseError> {
    if s.is_empty() {
        return Err(refuse(format!("{kind} is empty")));
    }
    if s.len() > 200 {
        return Err(refuse(format!("{kind} is longer than 200 characters")));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(refuse(format!("{kind} {s:?} contains {c:?}")));
    }
    Ok(())
}

fn check_prefixed(kind: &str, prefix: &str, s: &str) -> Result<(), ParseError> {
    check_token_chars(kind, s)?;
    if !s.starts_with(prefix) || s.len() == prefix.len() {
        return Err(refuse(format!(
            "{kind} {s:?} does not start with {prefix:?}"
        )));
    }
    Ok(())
}

impl UserId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(refuse("user id is empty"));
        }
        if t.len() > 200 {
            return Err(refuse("user id is longer than 200 characters"));
        }
        if t.chars().any(char::is_control) {
            return Err(refuse(format!(
                "user id {t:?} contains a control character"
            )));
        }
        Ok(Self(t.to_owned()))
    }

    /// An id as the daemon stored it (copied from `users.id`): checked like [`UserId::parse`]
    /// but not trimmed, so it still names its row.
    pub fn parse_stored(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)?;
        Ok(Self(s.to_owned()))
    }
}

impl Email {
    /// A deliberately plain check: one `@`, a non-empty local part, a dotted domain of
    /// letters, digits and hyphens, no spaces or control characters, at most 254 bytes.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        let bad = |why: &str| refuse(format!("e-mail {t:?} is not valid: {why}"));
        if t.is_empty() {
            return Err(refuse("e-mail is empty"));
        }
        if t.len() > 254 {
            return Err(bad("longer than 254 characters"));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains white space"));
        }
        let Some((local, domain)) = t.rsplit_once('@') else {
            return Err(bad("no @"));
        };
        if local.is_empty() || local.contains('@') || local.len() > 64 {
            return Err(bad("the part before @ is empty, too long or has another @"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad("misplaced dot before @"));
        }
        if local.chars().any(|c| "<>()[]\\,;:\"".contains(c)) {
            return Err(bad("a character that needs quoting before @"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(bad("the domain has no dot"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-');
            if !ok {
                return Err(bad("the domain is malformed"));
            }
        }
        Ok(Self(t.to_owned()))
    }
}

impl ReferenceId {
    pub const PREFIX: &'static str = "ref_";

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_prefixed("reference id", Self::PREFIX, s)?;
        Ok(Self(s.to_owned()))
    }

    /// A fresh random reference id: 128 bits, so it reveals nothing and never collides.
    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_alnum(24)))
    }
}

impl InquiryId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_prefixed("inquiry id", "inq_", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl TemplateId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_prefixed("inquiry template id", "itmpl_", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl TemplateVersionId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_prefixed("inquiry template version id", "itmplv_", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl EnvironmentId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        check_prefixed("environment id", "env_", s)?;
        Ok(Self(s.to_owned()))
    }
}

/// Random letters and digits, for ids, codes and idempotency keys.
pub fn random_alnum(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A calendar date of birth, `YYYY-MM-DD`, that exists and is not in the future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Birthdate(chrono::NaiveDate);

impl Birthdate {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::parse_at(s, chrono::Utc::now().date_naive())
    }

    /// Parses against a given "today", so a simulated clock can be honoured.
    pub fn parse_at(s: &str, today: chrono::NaiveDate) -> Result<Self, ParseError> {
        let t = s.trim();
        let shape_ok = t.len() == 10
            && t.as_bytes()[4] == b'-'
            && t.as_bytes()[7] == b'-'
            && t.chars()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
        if !shape_ok {
            return Err(refuse(format!("birthdate {t:?} is not YYYY-MM-DD")));
        }
        let date = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
            .map_err(|_| refuse(format!("birthdate {t:?} is not a real date")))?;
        if date > today {
            return Err(refuse(format!("birthdate {t:?} is in the future")));
        }
        if date < chrono::NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid") {
            return Err(refuse(format!("birthdate {t:?} is before 1900")));
        }
        Ok(Self(date))
    }

    pub fn date(&self) -> chrono::NaiveDate {
        self.0
    }
}

impl fmt::Display for Birthdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// A phone number as the application stored it: digits with an optional leading `+` and the
/// usual separators, 7 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        let digits = t.chars().filter(char::is_ascii_digit).count();
        let allowed = t
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || " -().".contains(c) || (c == '+' && i == 0));
        if !allowed || !(7..=15).contains(&digits) {
            return Err(refuse(format!(
                "phone number {t:?} is not 7 to 15 digits with an optional leading +"
            )));
        }
        Ok(Self(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name part (first or last), trimmed, non-empty, at most 100 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonName(String);

impl PersonName {
    pub fn parse(field: &str, s: &str) -> Result<Self, ParseError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(refuse(format!("{field} is empty")));
        }
        if t.chars().count() > 100 {
            return Err(refuse(format!("{field} is longer than 100 characters")));
        }
        if t.chars().any(char::is_control) {
            return Err(refuse(format!("{field} contains a control character")));
        }
        Ok(Self(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! secret_newtype {
    ($(#[$m:meta])* $name:ident, $label:literal) => {
        $(#[$m])*
        // secrecy's box: the text is zeroed when the last copy is dropped.
        pub struct $name(secrecy::SecretString);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(secrecy::SecretString::from(s.into()))
            }

            /// The secret itself: only for the one place that must send or render it.
            pub fn expose(&self) -> &str {
                secrecy::ExposeSecret::expose_secret(&self.0)
            }
        }

        impl Clone for $name {
            fn clone(&self) -> Self {
                Self::new(self.expose())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.expose() == other.expose()
            }
        }

        impl Eq for $name {}

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!($label, "([redacted])"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[redacted]")
            }
        }
    };
}

secret_newtype!(
    /// A Persona inquiry session token (a JWT). Grants access to the inquiry's PII.
    SessionToken,
    "SessionToken"
);
secret_newtype!(
    /// A Persona one-time link (`https://…/verify?code=…`). Single use, but a secret until used.
    OneTimeLink,
    "OneTimeLink"
);
secret_newtype!(
    /// The token of a mailed redirect link: opens the user's verification, so it is a secret.
    /// Stored only as its SHA-256 ([`RedirectToken::digest`]).
    RedirectToken,
    "RedirectToken"
);

impl RedirectToken {
    /// Letters and digits: 32 of 62 symbols carry about 190 bits.
    pub const LEN: usize = 32;

    pub fn generate() -> Self {
        Self::new(random_alnum(Self::LEN))
    }

    /// A token as it arrives in a link; `None` when it cannot be one (so it is never looked up).
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == Self::LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| Self::new(s))
    }

    /// What the store keeps and looks up by.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(self.expose().as_bytes()).into()
    }
}

secret_newtype!(
    /// A Persona API key.
    ApiKey,
    "ApiKey"
);
secret_newtype!(
    /// Any other secret from config: SMTP password, webhook secret.
    SecretText,
    "SecretText"
);

/// The kinds of link the daemon mails (SPEC: `[links] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    Static,
    Session,
    OneTime,
    /// A link to the daemon's own redirect endpoint, which obtains a Persona link at the click.
    Redirect,
}

impl LinkKind {
    pub const ALL: [LinkKind; 4] = [
        LinkKind::Session,
        LinkKind::OneTime,
        LinkKind::Static,
        LinkKind::Redirect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Static => "static",
            LinkKind::Session => "session",
            LinkKind::OneTime => "one-time",
            LinkKind::Redirect => "redirect",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                refuse(format!(
                    "{s:?} is not one of session, one-time, static, redirect"
                ))
            })
    }

    /// Whether this kind pre-creates an inquiry per user. Redirect links create it at the
    /// first click, so a user who never clicks costs Persona nothing.
    pub fn precreates(self) -> bool {
        !matches!(self, LinkKind::Static | LinkKind::Redirect)
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Persona inquiry status. Persona says statuses are not a closed set: unknown ones are kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InquiryStatus {
    Created,
    Pending,
    Completed,
    Failed,
    Expired,
    NeedsReview,
    Approved,
    Declined,
    Other(String),
}

impl InquiryStatus {
    pub fn parse(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "pending" => Self::Pending,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "expired" => Self::Expired,
            "needs_review" => Self::NeedsReview,
            "approved" => Self::Approved,
            "declined" => Self::Declined,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Created => "created",
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::NeedsReview => "needs_review",
            Self::Approved => "approved",
            Self::Declined => "declined",
            Self::Other(s) => s,
        }
    }

    /// Live: the user can still go through it (possibly after a resume for `expired`).
    /// Everything else, including statuses Persona adds later, counts as finished.
    pub fn is_finished(&self) -> bool {
        !matches!(self, Self::Created | Self::Pending | Self::Expired)
    }

    /// Open right now without a resume.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Created | Self::Pending)
    }
}

impl fmt::Display for InquiryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for InquiryStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for InquiryStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Self::parse(&s))
    }
}

/// A language tag in BCP 47 (`de`, `de-AT`, `pt-BR`), kept in its canonical spelling
/// (`de-at` reads as `de-AT`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Locale {
    tag: String,
    language: String,
    region: Option<String>,
}

impl Locale {
    pub fn parse(s: &str) -> Result<Locale, ParseError> {
        let trimmed = s.trim();
        let parsed = icu_locale_core::Locale::try_from_str(trimmed).map_err(|e| {
            refuse(format!(
                "locale {trimmed:?} is not a BCP 47 language tag ({e})"
            ))
        })?;
        if parsed.id.language.is_unknown() {
            return Err(refuse(format!(
                "locale {trimmed:?} names no language (like \"de\" or \"pt-BR\")"
            )));
        }
        Ok(Locale {
            tag: parsed.to_string(),
            language: parsed.id.language.to_string(),
            region: parsed.id.region.map(|r| r.to_string()),
        })
    }

    /// A user's locale column: absent or blank is `None`; a value that is not BCP 47 is
    /// `None` too, with a warning naming the user, so a typo costs the user their language
    /// and nothing else.
    pub fn of_user(raw: &RawUser) -> Option<Locale> {
        let value = raw
            .locale
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())?;
        match Locale::parse(value) {
            Ok(locale) => Some(locale),
            Err(e) => {
                tracing::warn!(user = %raw.id, "user {}: {e}; their mails use the default templates and their links no language", raw.id);
                None
            }
        }
    }

    /// The whole tag, e.g. `de-AT`: what Persona's `language` parameter gets.
    pub fn as_str(&self) -> &str {
        &self.tag
    }

    /// The language subtag alone, e.g. `de` for `de-AT`.
    pub fn language(&self) -> &str {
        &self.language
    }

    /// The region subtag, e.g. `AT` for `de-AT`.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)
    }
}

/// A `users` row as the application wrote it: nothing checked yet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawUser {
    pub id: String,
    pub email: String,
    pub name_first: Option<String>,
    pub name_last: Option<String>,
    pub birthdate: Option<String>,
    pub phone_number: Option<String>,
    /// BCP 47, e.g. `de` or `pt-BR`; checked by [`Locale::parse`] when the user is mailed.
    #[serde(default)]
    pub locale: Option<String>,
}

impl RawUser {
    /// A stable digest of the row, so an edited row can be noticed and validated again.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [
            Some(&self.id),
            Some(&self.email),
            self.name_first.as_ref(),
            self.name_last.as_ref(),
            self.birthdate.as_ref(),
            self.phone_number.as_ref(),
        ] {
            match part {
                Some(v) => {
                    h.update([1u8]);
                    h.update(v.as_bytes());
                }
                None => h.update([0u8]),
            }
            h.update([0xffu8]);
        }
        // Added in release 2: only a set locale counts, so rows from before keep their digest.
        if let Some(locale) = &self.locale {
            h.update([2u8]);
            h.update(locale.as_bytes());
        }
        hex::encode(&h.finalize()[..16])
    }
}

/// A user whose row passed every check: what provisioning works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name_first: Option<PersonName>,
    pub name_last: Option<PersonName>,
    pub birthdate: Option<Birthdate>,
    pub phone_number: Option<PhoneNumber>,
    /// The language of the user's mails and Persona flow; `None` means the default templates.
    pub locale: Option<Locale>,
}

impl User {
    /// Validates a row; the error lists every reason, readable as the user's skip reason.
    /// Empty optional columns count as absent.
    pub fn parse(raw: &RawUser, today: chrono::NaiveDate) -> Result<User, ParseError> {
        fn opt<T>(
            v: &Option<String>,
            parse: impl FnOnce(&str) -> Result<T, ParseError>,
            errs: &mut Vec<String>,
        ) -> Option<T> {
            let s = v.as_deref().map(str::trim).filter(|s| !s.is_empty())?;
            parse(s).map_err(|e| errs.push(e.0)).ok()
        }
        let mut errs = Vec::new();
        let id = UserId::parse(&raw.id).map_err(|e| errs.push(e.0)).ok();
        let email = Email::parse(&raw.email).map_err(|e| errs.push(e.0)).ok();
        let name_first = opt(
            &raw.name_first,
            |s| PersonName::parse("name_first", s),
            &mut errs,
        );
        let name_last = opt(
            &raw.name_last,
            |s| PersonName::parse("name_last", s),
            &mut errs,
        );
        let birthdate = opt(&raw.birthdate, |s| Birthdate::parse_at(s, today), &mut errs);
        let phone_number = opt(&raw.phone_number, PhoneNumber::parse, &mut errs);
        match (id, email, errs.is_empty()) {
            (Some(id), Some(email), true) => Ok(User {
                locale: Locale::of_user(raw),
                id,
                email,
                name_first,
                name_last,
                birthdate,
                phone_number,
            }),
            _ => Err(ParseError(errs.join("; "))),
        }
    }
}

/// Which mail a user gets: the first link, a new one after a resume or a recreate, or a
/// reminder on the `[reminders]` cadence. `as_str` is the name stored in the database and the
/// templates' file-name prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MailKind {
    Invite,
    Renewed,
    Reminder,
}

impl MailKind {
    pub const ALL: [MailKind; 3] = [MailKind::Invite, MailKind::Renewed, MailKind::Reminder];

    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Invite => "invite",
            MailKind::Renewed => "renewed",
            MailKind::Reminder => "reminder",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseError(format!("{s:?} is not one of invite, renewed, reminder")))
    }
}

impl std::fmt::Display for MailKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MailKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_parse_as_bcp_47_in_canonical_spelling() {
        let at = Locale::parse(" de-at ").unwrap();
        assert_eq!(
            (at.as_str(), at.language(), at.region()),
            ("de-AT", "de", Some("AT"))
        );
        let br = Locale::parse("PT-br").unwrap();
        assert_eq!(br.as_str(), "pt-BR");
        assert_eq!(Locale::parse("sr-Latn-RS").unwrap().language(), "sr");
        for bad in ["", "english please", "de_AT", "und", "12", "x-private"] {
            assert!(Locale::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let raw = RawUser {
            id: "usr_1".into(),
            locale: Some("english please".into()),
            ..RawUser::default()
        };
        assert_eq!(
            Locale::of_user(&raw),
            None,
            "a bad value is ignored, not fatal"
        );
        assert_eq!(
            RawUser::default().fingerprint(),
            RawUser {
                locale: None,
                ..RawUser::default()
            }
            .fingerprint()
        );
        assert_ne!(
            RawUser::default().fingerprint(),
            RawUser {
                locale: Some("de".into()),
                ..RawUser::default()
            }
            .fingerprint()
        );
    }

    #[test]
    fn email_accepts_plain_addresses_and_refuses_broken_ones() {
        assert!(Email::parse("alex.sample+x@example.co.uk").is_ok());
        for bad in [
            "",
            "no-at",
            "a@b",
            "a b@example.com",
            "@example.com",
            "a@-x.com",
            "a@@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn birthdate_refuses_impossible_dates() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert!(Birthdate::parse_at("1977-08-31", today).is_ok());
        assert!(Birthdate::parse_at("1977-02-30", today).is_err());
        assert!(Birthdate::parse_at("31/08/1977", today).is_err());
        assert!(Birthdate::parse_at("2030-01-01", today).is_err());
    }

    #[test]
    fn a_user_row_reports_every_reason() {
        let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        let raw = RawUser {
            id: "usr_1".into(),
            email: "not-an-email".into(),
            birthdate: Some("1990-02-31".into()),
            name_first: Some("  ".into()),
            ..RawUser::default()
        };
        let e = User::parse(&raw, today).unwrap_err().0;
        assert!(e.contains("e-mail") && e.contains("birthdate"), "{e}");
        let good = RawUser {
            email: "a@example.com".into(),
            birthdate: Some("1977-08-31".into()),
            ..raw
        };
        assert!(User::parse(&good, today).is_ok());
        assert_ne!(good.fingerprint(), RawUser::default().fingerprint());
    }

    #[test]
    fn secrets_never_print_themselves() {
        let t = SessionToken::new("eyJhbGciOi.secret.value");
        assert!(!format!("{t:?} {t}").contains("secret"));
        let k = ApiKey::new("key-that-must-not-leak");
        assert!(!format!("{k:?} {k}").contains("leak"));
    }

    #[test]
    fn reference_ids_are_random_and_prefixed() {
        let a = ReferenceId::generate();
        let b = ReferenceId::generate();
        assert_ne!(a, b);
        assert!(ReferenceId::parse(a.as_str()).is_ok());
    }

    #[test]
    fn unknown_statuses_are_kept_and_count_as_finished() {
        let s = InquiryStatus::parse("transmogrified");
        assert_eq!(s.as_str(), "transmogrified");
        assert!(s.is_finished());
        assert!(!InquiryStatus::Expired.is_finished());
    }
}
