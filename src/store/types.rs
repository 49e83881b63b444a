//! How the typed values rows carry are bound and read on SQLite: each is stored as the text
//! of its `as_str` (times as [`format_ts`]), and a text that does not parse back is an error
//! the row decoder reports as [`super::StoreError::BadValue`].

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Sqlite, Type};

use super::Ts;
use super::inquiries::RowStatus;
use super::mails::MailStatus;
use super::user_states::UserState;
use crate::clock::{format_ts, parse_ts};
use crate::domain::{InquiryId, ParseError, ReferenceId, UserId};
use crate::mail::MailKind;

/// `Type`, `Encode` and `Decode` for SQLite as TEXT: `$text` turns a value into its stored
/// text, `$parse` the text back into a value.
macro_rules! as_text {
    ($ty:ty, |$v:ident| $text:expr, |$s:ident| $parse:expr) => {
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
as_text!(Ts, |v| format_ts(v.0), |s| parse_ts(s).map(Ts).ok_or_else(
    || ParseError(format!("{s:?} is not an RFC 3339 time"))
));
