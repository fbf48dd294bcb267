//! Typed identifiers. Each is validated once, at the edge, so code that holds
//! a [`ParcelId`] never asks again whether it is well-formed.

use std::fmt;
use std::str::FromStr;

use crate::error::{DomainError, Result, invalid};
use crate::event::Category;

/// The longest identifier accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

fn check_id(field: &'static str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if s.len() > MAX_ID_LEN {
        return Err(invalid(
            field,
            format!("is {} bytes long, at most {MAX_ID_LEN} allowed", s.len()),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(invalid(
            field,
            format!("{s:?} contains {c:?}; allowed are A-Z a-z 0-9 - _ . :"),
        ));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps an identifier.
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                check_id($field, &s)?;
                Ok(Self(s))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// A parcel, as the carrier labels it, e.g. `SE-00001234`.
    ParcelId, "parcel_id"
);
string_id!(
    /// A partner retailer (the tenant of its parcels).
    PartnerId, "partner_id"
);
string_id!(
    /// A depot vans leave from.
    DepotId, "depot_id"
);
string_id!(
    /// A planned route: one van, one depot, one local day.
    RouteId, "route_id"
);
string_id!(
    /// An in-home access grant.
    GrantId, "grant_id"
);
string_id!(
    /// A home with a smart lock.
    HomeId, "home_id"
);
string_id!(
    /// A driver.
    DriverId, "driver_id"
);
string_id!(
    /// A handheld or lock device.
    DeviceId, "device_id"
);
string_id!(
    /// A van.
    VehicleId, "vehicle_id"
);

/// The producer-chosen id of one event; what makes a resend recognisable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A fresh id: UUID v7, time-ordered, so the log's id index grows at its
    /// end instead of being written all over. Producers should use these; any
    /// UUID is accepted.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Wraps a UUID.
    pub fn from_uuid(id: uuid::Uuid) -> Self {
        Self(id)
    }

    /// From the 16 bytes of a UUID.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Uuid::from_bytes(bytes))
    }

    /// The UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        self.0
    }

    /// The 16 bytes of the UUID.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for EventId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| invalid("event_id", format!("{s:?} is not a UUID: {e}")))
    }
}

/// The name of one aggregate's stream: `category/id`, e.g. `parcel/SE-1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId {
    category: Category,
    id: String,
}

impl StreamId {
    /// A stream of `category` for the aggregate `id`.
    pub fn new(category: Category, id: impl AsRef<str>) -> Result<Self> {
        let id = id.as_ref();
        check_id("stream", id)?;
        Ok(Self {
            category,
            id: id.to_owned(),
        })
    }

    /// The stream of a parcel.
    pub fn parcel(id: &ParcelId) -> Self {
        Self {
            category: Category::Parcel,
            id: id.0.clone(),
        }
    }

    /// The stream of a route.
    pub fn route(id: &RouteId) -> Self {
        Self {
            category: Category::Route,
            id: id.0.clone(),
        }
    }

    /// The stream of a grant.
    pub fn grant(id: &GrantId) -> Self {
        Self {
            category: Category::Grant,
            id: id.0.clone(),
        }
    }

    /// The stream of a home.
    pub fn home(id: &HomeId) -> Self {
        Self {
            category: Category::Home,
            id: id.0.clone(),
        }
    }

    /// The aggregate type.
    pub fn category(&self) -> Category {
        self.category
    }

    /// The aggregate id within its category.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.category.as_str(), self.id)
    }
}

impl FromStr for StreamId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self> {
        let (category, id) = s
            .split_once('/')
            .ok_or_else(|| invalid("stream", format!("{s:?} is not of the form category/id")))?;
        Self::new(category.parse()?, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_with_the_field_named() {
        assert!(ParcelId::new("SE-00001234").is_ok());
        let err = ParcelId::new("SE 1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid parcel_id: \"SE 1\" contains ' '; allowed are A-Z a-z 0-9 - _ . :"
        );
        assert!(matches!(
            DepotId::new(""),
            Err(DomainError::Invalid {
                field: "depot_id",
                ..
            })
        ));
        assert!(PartnerId::new("x".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn stream_ids_round_trip_through_text() {
        let s: StreamId = "parcel/SE-00001234".parse().unwrap();
        assert_eq!(s.category(), Category::Parcel);
        assert_eq!(s.id(), "SE-00001234");
        assert_eq!(s.to_string(), "parcel/SE-00001234");
        assert!("lorry/1".parse::<StreamId>().is_err());
        assert!("parcel".parse::<StreamId>().is_err());
        assert!("parcel/".parse::<StreamId>().is_err());
    }

    #[test]
    fn event_ids_parse_uuids_only() {
        let id = EventId::new();
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        assert!("not-a-uuid".parse::<EventId>().is_err());
    }
}
