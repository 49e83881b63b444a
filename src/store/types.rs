//! How the typed values rows carry are bound and read: each is stored as the text of its
//! `as_str` on both backends; times as [`format_ts`] text on SQLite and as timestamptz (cut to
//! milliseconds) on PostgreSQL. A value that does not parse back is an error the row decoder
//! reports as [`super::StoreError::BadValue`].

use chrono::{DateTime, DurationRound as _, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

use super::inquiries::RowStatus;
use super::mails::MailStatus;
use super::user_states::UserState;
use super::{Ts, TsText};
use crate::clock::{format_ts, parse_ts};
use crate::domain::MailKind;
use crate::domain::{InquiryId, ParseError, ReferenceId, UserId};

/// `Type`, `Encode` and `Decode` as text, for SQLite (and, in the first form, for PostgreSQL
/// too): `$text` turns a value into its stored text, `$parse` the text back into a value.
macro_rules! as_text {
    ($ty:ty, |$v:ident| $text:expr, |$s:ident| $parse:expr) => {
        as_text!(sqlite $ty, |$v| $text, |$s| $parse);

        impl Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                <String as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $ty {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <String as Encode<Postgres>>::encode($text, buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $ty {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s = <&str as Decode<Postgres>>::decode(value)?;
                Ok($parse?)
            }
        }
    };
    (sqlite $ty:ty, |$v:ident| $text:expr, |$s:ident| $parse:expr) => {
        impl Type<Sqlite> for $ty {
            fn type_info() -> SqliteTypeInfo {
                <String as Type<Sqlite>>::type_info()
            }
            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <String as Type<Sqlite>>::compatible(ty)
            }
        }

        impl Encode<'_, Sqlite> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut SqliteArgumentsBuffer,
            ) -> Result<IsNull, BoxDynError> {
                let $v = self;
                <String as Encode<Sqlite>>::encode($text, buf)
            }
        }

        impl<'r> Decode<'r, Sqlite> for $ty {
            fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
                let $s = <&str as Decode<Sqlite>>::decode(value)?;
                Ok($parse?)
            }
        }
    };
}

as_text!(UserId, |v| v.as_str().to_owned(), |s| UserId::parse_stored(
    s
));
as_text!(InquiryId, |v| v.as_str().to_owned(), |s| InquiryId::parse(
    s
));
as_text!(ReferenceId, |v| v.as_str().to_owned(), |s| {
    ReferenceId::parse(s)
});
as_text!(MailKind, |v| v.as_str().to_owned(), |s| MailKind::parse(s));
as_text!(
    RowStatus,
    |v| v.as_str().to_owned(),
    |s| Ok::<_, ParseError>(RowStatus::parse(s))
);
as_text!(
    MailStatus,
    |v| v.as_str().to_owned(),
    |s| MailStatus::parse(s)
);
as_text!(UserState, |v| v.as_str().to_owned(), |s| UserState::parse(
    s
));
as_text!(sqlite Ts, |v| format_ts(v.0), |s| parse_ts(s).map(Ts).ok_or_else(
    || ParseError(format!("{s:?} is not an RFC 3339 time"))
));
as_text!(sqlite TsText, |v| v.0.clone(), |s| Ok::<_, ParseError>(TsText(
    s.to_owned()
)));

/// Microseconds are cut off on the way in, as SQLite's text keeps milliseconds only, so a time
/// read back is the time written on both backends.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(chrono::TimeDelta::milliseconds(1))
        .unwrap_or(t)
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode(millis(self.0), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Ts(millis(<DateTime<Utc> as Decode<Postgres>>::decode(
            value,
        )?)))
    }
}

impl Type<Postgres> for TsText {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for TsText {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(TsText(format_ts(
            <Ts as Decode<Postgres>>::decode(value)?.0,
        )))
    }
}
