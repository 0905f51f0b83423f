//! SOURCE_DATE_EPOCH as the calendar dates ISO 9660 records: every timestamp in the image
//! comes from it, so that two builds give the same bytes.

use crate::build::iso_types::{DirDate, VolDate};

/// A date in the proleptic Gregorian calendar, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl Civil {
    /// Seconds since 1970-01-01 UTC to a civil date (H. Hinnant's days-to-civil).
    pub fn from_epoch(epoch: i64) -> Self {
        let days = epoch.div_euclid(86_400);
        let secs = epoch.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month,
            day,
            hour: (secs / 3600) as u8,
            minute: (secs / 60 % 60) as u8,
            second: (secs % 60) as u8,
        }
    }

    /// ECMA-119 9.1.5 (years 1900..=2155 representable).
    pub(super) fn dir_date(self) -> DirDate {
        DirDate {
            year: (self.year.clamp(1900, 2155) - 1900) as u8,
            month: self.month,
            day: self.day,
            hour: self.hour,
            minute: self.minute,
            second: self.second,
            gmt_offset: 0,
        }
    }

    /// ECMA-119 8.4.26.1.
    pub(super) fn vol_date(self) -> VolDate {
        let text = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.year.clamp(1, 9999),
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second
        );
        let mut digits = [b'0'; 16];
        digits.copy_from_slice(text.as_bytes());
        VolDate {
            digits,
            gmt_offset: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        let c = Civil::from_epoch(0);
        assert_eq!((c.year, c.month, c.day, c.hour), (1970, 1, 1, 0));
        let c = Civil::from_epoch(1_700_000_000);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second),
            (2023, 11, 14, 22, 13, 20)
        );
        let c = Civil::from_epoch(951_782_400); // 2000-02-29
        assert_eq!((c.year, c.month, c.day), (2000, 2, 29));
    }
}
