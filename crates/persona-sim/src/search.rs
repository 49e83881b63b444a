//! `POST /inquiries/search`: the query language of the spec (and / or / not over attribute
//! predicates) and the search index, which trails the live inquiries by the configured lag.
//! Pure: every function takes "now" and the lag; nothing here does I/O.

use std::cmp::Ordering;
use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{Map, Value};

use crate::status::Status;

/// The spec: "Maximum nesting depth: 2 levels, Maximum clauses per AND: 20" (and per OR).
const MAX_DEPTH: usize = 2;
const MAX_CLAUSES: usize = 20;
/// Superseded index versions are kept this long, so any lag up to a day is served faithfully.
const HISTORY: Duration = Duration::days(1);

/// The spec's searchable attributes, spelled as the spec spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Status,
    CreatedAt,
    UpdatedAt,
    ReferenceId,
    InquiryTemplateId,
}

impl Attribute {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "status" => Self::Status,
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            "reference_id" => Self::ReferenceId,
            "inquiry_template_id" => Self::InquiryTemplateId,
            _ => return None,
        })
    }

    fn is_time(self) -> bool {
        matches!(self, Self::CreatedAt | Self::UpdatedAt)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Operator {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => Self::Eq,
            "gt" => Self::Gt,
            "gte" => Self::Gte,
            "lt" => Self::Lt,
            "lte" => Self::Lte,
            _ => return None,
        })
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            Self::Eq => o == Ordering::Equal,
            Self::Gt => o == Ordering::Greater,
            Self::Gte => o != Ordering::Less,
            Self::Lt => o == Ordering::Less,
            Self::Lte => o != Ordering::Greater,
        }
    }
}

/// A predicate's value, typed by its attribute.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Time(DateTime<Utc>),
    Text(String),
}

/// A parsed `query`.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    And(Vec<Query>),
    Or(Vec<Query>),
    Not(Box<Query>),
    Predicate {
        attribute: Attribute,
        operator: Operator,
        value: Operand,
    },
}

/// What the index holds about one inquiry: its searchable attributes at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indexed {
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The reference id of the inquiry's account (the spec's definition of `reference_id`).
    pub reference_id: Option<String>,
    pub template_id: String,
}

/// A date-only value (`'2025-01-01'`, as in the spec's examples) means midnight UTC.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    crate::time::parse_ts(s).or_else(|| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    })
}

impl Query {
    /// Parses and checks a `query` object; the error is the sentence for a 400.
    pub fn parse(v: &Value) -> Result<Self, String> {
        Self::parse_at(v, "query", 0)
    }

    fn parse_at(v: &Value, at: &str, depth: usize) -> Result<Self, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{at} must be an object"))?;
        let boolean = ["and", "or", "not"]
            .into_iter()
            .find(|k| obj.contains_key(*k));
        if let Some(kind) = boolean {
            if obj.len() != 1 {
                return Err(format!("{at} must hold only {kind}"));
            }
            if depth >= MAX_DEPTH {
                return Err(format!("{at}.{kind} nests deeper than {MAX_DEPTH} levels"));
            }
            let inner = &obj[kind];
            let at = format!("{at}.{kind}");
            if kind == "not" {
                return Ok(Self::Not(Box::new(Self::parse_at(inner, &at, depth + 1)?)));
            }
            let items = inner
                .as_array()
                .ok_or_else(|| format!("{at} must be an array"))?;
            if items.is_empty() || items.len() > MAX_CLAUSES {
                return Err(format!("{at} must hold 1 to {MAX_CLAUSES} clauses"));
            }
            let clauses = items
                .iter()
                .enumerate()
                .map(|(i, c)| Self::parse_at(c, &format!("{at}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if kind == "and" {
                Self::And(clauses)
            } else {
                Self::Or(clauses)
            });
        }
        Self::parse_predicate(obj, at)
    }

    fn parse_predicate(obj: &Map<String, Value>, at: &str) -> Result<Self, String> {
        if let Some(k) = obj
            .keys()
            .find(|k| !["attribute", "operator", "value"].contains(&k.as_str()))
        {
            return Err(format!("{at}.{k} is not a permitted parameter"));
        }
        let text = |key: &str| {
            obj.get(key)
                .ok_or_else(|| format!("{at}.{key} is missing"))?
                .as_str()
                .ok_or_else(|| format!("{at}.{key} must be a string"))
        };
        let name = text("attribute")?;
        let attribute = Attribute::parse(name).ok_or_else(|| {
            format!(
                "{at}.attribute {name:?} is not searchable (status, created_at, updated_at, \
                 reference_id, inquiry_template_id)"
            )
        })?;
        let op = text("operator")?;
        let operator = Operator::parse(op)
            .ok_or_else(|| format!("{at}.operator {op:?} is not one of eq, gt, gte, lt, lte"))?;
        let raw = obj
            .get("value")
            .ok_or_else(|| format!("{at}.value is missing"))?;
        let value = match (attribute.is_time(), raw) {
            (true, Value::String(s)) => Operand::Time(
                parse_time(s).ok_or_else(|| format!("{at}.value {s:?} is not a date-time"))?,
            ),
            (true, _) => return Err(format!("{at}.value must be a date-time string")),
            (false, Value::String(s)) => Operand::Text(s.clone()),
            (false, _) => return Err(format!("{at}.value must be a string")),
        };
        if !attribute.is_time() && operator != Operator::Eq {
            return Err(format!("{at}.operator {op:?} needs a timestamp attribute"));
        }
        Ok(Self::Predicate {
            attribute,
            operator,
            value,
        })
    }

    pub fn matches(&self, doc: &Indexed) -> bool {
        match self {
            Self::And(cs) => cs.iter().all(|c| c.matches(doc)),
            Self::Or(cs) => cs.iter().any(|c| c.matches(doc)),
            Self::Not(c) => !c.matches(doc),
            Self::Predicate {
                attribute,
                operator,
                value,
            } => {
                let ordering = match (attribute, value) {
                    (Attribute::CreatedAt, Operand::Time(t)) => doc.created_at.cmp(t),
                    (Attribute::UpdatedAt, Operand::Time(t)) => doc.updated_at.cmp(t),
                    (Attribute::Status, Operand::Text(s)) => {
                        return doc.status.as_str() == s;
                    }
                    (Attribute::InquiryTemplateId, Operand::Text(s)) => {
                        return doc.template_id == *s;
                    }
                    (Attribute::ReferenceId, Operand::Text(s)) => {
                        return doc.reference_id.as_deref() == Some(s.as_str());
                    }
                    _ => unreachable!("parse pairs attributes with operands of their kind"),
                };
                operator.holds(ordering)
            }
        }
    }
}

/// `sort`: which attribute, which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub attribute: Attribute,
    pub descending: bool,
}

impl Sort {
    /// Without a `sort` the simulator orders as the list does: newest created first.
    pub const DEFAULT: Sort = Sort {
        attribute: Attribute::CreatedAt,
        descending: true,
    };

    pub fn parse(v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("sort must be an object")?;
        if let Some(k) = obj
            .keys()
            .find(|k| !["attribute", "direction"].contains(&k.as_str()))
        {
            return Err(format!("sort.{k} is not a permitted parameter"));
        }
        let text = |key: &str| {
            obj.get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("sort.{key} must be a string"))
        };
        let name = text("attribute")?;
        let attribute = Attribute::parse(name)
            .ok_or_else(|| format!("sort.attribute {name:?} is not searchable"))?;
        let descending = match text("direction")? {
            "asc" => false,
            "desc" => true,
            other => return Err(format!("sort.direction {other:?} is not asc or desc")),
        };
        Ok(Self {
            attribute,
            descending,
        })
    }

    /// Orders two index entries; creation order (`seq`) breaks ties, so paging is stable.
    pub fn compare(&self, a: (&Indexed, u64), b: (&Indexed, u64)) -> Ordering {
        let by = match self.attribute {
            Attribute::Status => a.0.status.as_str().cmp(b.0.status.as_str()),
            Attribute::CreatedAt => a.0.created_at.cmp(&b.0.created_at),
            Attribute::UpdatedAt => a.0.updated_at.cmp(&b.0.updated_at),
            Attribute::ReferenceId => a.0.reference_id.cmp(&b.0.reference_id),
            Attribute::InquiryTemplateId => a.0.template_id.cmp(&b.0.template_id),
        }
        .then(a.1.cmp(&b.1));
        if self.descending { by.reverse() } else { by }
    }
}

struct Version {
    changed_at: DateTime<Utc>,
    doc: Indexed,
}

/// The search index: per inquiry, the versions of its searchable attributes with the moment
/// each came about. A version is searchable once `lag` passed since that moment.
#[derive(Default)]
pub struct Index {
    versions: HashMap<String, Vec<Version>>,
}

impl Index {
    /// Records the inquiry's attributes as of `changed_at` (unchanged attributes add nothing).
    pub fn record(&mut self, id: &str, changed_at: DateTime<Utc>, doc: Indexed) {
        let versions = self.versions.entry(id.to_owned()).or_default();
        if versions.last().is_some_and(|v| v.doc == doc) {
            return;
        }
        versions.push(Version { changed_at, doc });
        // Keep one version older than the history window: it is what a long lag still sees.
        let horizon = changed_at - HISTORY;
        let settled = versions
            .iter()
            .rposition(|v| v.changed_at <= horizon)
            .unwrap_or(0);
        versions.drain(..settled);
    }

    /// What a search at `now` sees of the inquiry; `None` while even its creation is younger
    /// than `lag`.
    pub fn visible(&self, id: &str, now: DateTime<Utc>, lag: Duration) -> Option<&Indexed> {
        let seen_until = now - lag;
        self.versions
            .get(id)?
            .iter()
            .rev()
            .find(|v| v.changed_at <= seen_until)
            .map(|v| &v.doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(status: Status, updated: &str) -> Indexed {
        Indexed {
            status,
            created_at: parse_time("2026-01-01T00:00:00Z").unwrap(),
            updated_at: parse_time(updated).unwrap(),
            reference_id: Some("user-1".into()),
            template_id: "itmpl_A".into(),
        }
    }

    #[test]
    fn the_specs_complex_example_parses_and_matches() {
        let q = Query::parse(&json!({"and": [
            {"attribute": "inquiry_template_id", "operator": "eq", "value": "itmpl_A"},
            {"or": [
                {"attribute": "status", "operator": "eq", "value": "completed"},
                {"attribute": "status", "operator": "eq", "value": "approved"}
            ]},
            {"attribute": "created_at", "operator": "gte", "value": "2025-01-01"}
        ]}))
        .unwrap();
        assert!(q.matches(&doc(Status::Completed, "2026-01-02T00:00:00Z")));
        assert!(!q.matches(&doc(Status::Pending, "2026-01-02T00:00:00Z")));
        let not = Query::parse(
            &json!({"not": {"attribute": "status", "operator": "eq", "value": "pending"}}),
        )
        .unwrap();
        assert!(not.matches(&doc(Status::Completed, "2026-01-02T00:00:00Z")));
        assert!(!not.matches(&doc(Status::Pending, "2026-01-02T00:00:00Z")));
    }

    #[test]
    fn time_operators_compare_at_full_precision() {
        let d = doc(Status::Pending, "2026-01-02T00:00:00.500Z");
        let at = |op: &str, v: &str| {
            Query::parse(&json!({"attribute": "updated_at", "operator": op, "value": v}))
                .unwrap()
                .matches(&d)
        };
        assert!(at("gte", "2026-01-02T00:00:00.500Z"));
        assert!(!at("gt", "2026-01-02T00:00:00.500Z"));
        assert!(at("gt", "2026-01-02T00:00:00.499Z"));
        assert!(at("lt", "2026-01-02T00:00:00.501Z"));
        assert!(at("lte", "2026-01-02T00:00:00.500Z"));
        assert!(at("eq", "2026-01-02T00:00:00.500Z"));
    }

    #[test]
    fn malformed_queries_are_refused_with_a_reason() {
        let bad = [
            json!({"attribute": "note", "operator": "eq", "value": "x"}),
            json!({"attribute": "status", "operator": "like", "value": "x"}),
            json!({"attribute": "status", "operator": "gt", "value": "created"}),
            json!({"attribute": "updated_at", "operator": "gt", "value": 5}),
            json!({"attribute": "updated_at", "operator": "gt", "value": "yesterday"}),
            json!({"and": []}),
            json!({"and": [{"or": [{"not": {"attribute": "status", "operator": "eq", "value": "x"}}]}]}),
            json!({"and": [], "or": []}),
            json!({}),
        ];
        for q in bad {
            assert!(Query::parse(&q).is_err(), "{q}");
        }
        let twenty_one: Vec<Value> = (0..21)
            .map(|_| json!({"attribute": "status", "operator": "eq", "value": "x"}))
            .collect();
        assert!(Query::parse(&json!({ "or": twenty_one })).is_err());
    }

    #[test]
    fn the_index_shows_a_change_only_after_the_lag() {
        let t0 = parse_time("2026-01-01T00:00:00Z").unwrap();
        let lag = Duration::seconds(60);
        let mut index = Index::default();
        index.record("inq_1", t0, doc(Status::Created, "2026-01-01T00:00:00Z"));
        assert!(
            index
                .visible("inq_1", t0 + Duration::seconds(59), lag)
                .is_none()
        );
        let t1 = t0 + Duration::seconds(120);
        index.record("inq_1", t1, doc(Status::Completed, "2026-01-01T00:02:00Z"));
        let seen = |at: Duration| index.visible("inq_1", t0 + at, lag).unwrap().status;
        assert_eq!(seen(Duration::seconds(60)), Status::Created);
        assert_eq!(seen(Duration::seconds(179)), Status::Created);
        assert_eq!(seen(Duration::seconds(180)), Status::Completed);
    }
}
