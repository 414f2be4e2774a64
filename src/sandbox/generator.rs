//! Seeded generator of realistic Turkish shop data (people, addresses, products, prices, times) for the
//! fake marketplaces, and of their random choices (which orders change). The same seed gives the same
//! data and choices, so tests and benchmarks are reproducible.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rust_decimal::Decimal;

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// Turkish mobile number in the national form, e.g. `05321234567`.
    pub phone: String,
}

/// A Turkish postal address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub line: String,
    pub district: String,
    pub city: String,
    pub postal_code: String,
}

/// A product as a shop lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// Two decimal places.
    pub unit_price: Decimal,
}

const FIRST_NAMES: &[&str] = &[
    "Ayşe", "Fatma", "Emine", "Hatice", "Zeynep", "Elif", "Gülay", "Şükran", "Özlem", "Çiğdem",
    "İpek", "Büşra", "Merve", "Gökçe", "Ömer", "Mehmet", "Mustafa", "Ahmet", "Ali", "Hüseyin",
    "İbrahim", "Şahin", "Çağrı", "Oğuz", "Uğur", "Görkem", "Barış", "Eren", "Tolga", "Sercan",
    "Ilgın", "Doğa",
];

const LAST_NAMES: &[&str] = &[
    "Yılmaz",
    "Kaya",
    "Demir",
    "Şahin",
    "Çelik",
    "Yıldız",
    "Yıldırım",
    "Öztürk",
    "Aydın",
    "Özdemir",
    "Arslan",
    "Doğan",
    "Kılıç",
    "Aslan",
    "Çetin",
    "Kara",
    "Koç",
    "Kurt",
    "Özkan",
    "Şimşek",
    "Türk",
    "Güneş",
    "Erdoğan",
    "Akgül",
    "Bulut",
    "Uçar",
    "Işık",
    "Gündüz",
];

/// City, district and the district's postal code prefix.
const PLACES: &[(&str, &str, &str)] = &[
    ("İstanbul", "Kadıköy", "347"),
    ("İstanbul", "Beşiktaş", "343"),
    ("İstanbul", "Üsküdar", "346"),
    ("İstanbul", "Şişli", "343"),
    ("Ankara", "Çankaya", "066"),
    ("Ankara", "Keçiören", "063"),
    ("İzmir", "Karşıyaka", "355"),
    ("İzmir", "Bornova", "350"),
    ("Bursa", "Nilüfer", "161"),
    ("Antalya", "Muratpaşa", "071"),
    ("Eskişehir", "Odunpazarı", "260"),
    ("Gaziantep", "Şahinbey", "273"),
    ("Balıkesir", "Balya", "104"),
    ("Giresun", "Bulancak", "283"),
    ("Muğla", "Fethiye", "483"),
    ("Diyarbakır", "Bağlar", "210"),
];

const STREETS: &[&str] = &[
    "Atatürk Cd.",
    "İstiklal Cd.",
    "Bağdat Cd.",
    "Gül Sk.",
    "Menekşe Sk.",
    "Çınar Sk.",
    "Kocacami Mah. Mercan Sk.",
    "Cumhuriyet Mah. Şehit Er Sk.",
    "Yeşilyurt Mah. Öğretmenler Cd.",
    "Fevzi Çakmak Mah. Işıklar Sk.",
];

/// Product name, SKU stem and the price range in whole lira.
const PRODUCTS: &[(&str, &str, u32, u32)] = &[
    ("Pamuklu Tişört", "TSH", 99, 449),
    ("Kot Pantolon", "KOT", 299, 1299),
    ("Deri Cüzdan", "CZD", 149, 899),
    ("Çelik Termos 750 ml", "TRM", 249, 799),
    ("Bluetooth Kulaklık", "KLK", 399, 2999),
    ("Türk Kahvesi 250 g", "KHV", 79, 189),
    ("Bakır Cezve", "CZV", 189, 649),
    ("İpek Eşarp", "ESP", 349, 1899),
    ("Çocuk Montu", "MNT", 599, 2499),
    ("Pilsan Taş Ev", "OYN", 1499, 2999),
    ("Zeytinyağlı Sabun Seti", "SBN", 59, 249),
    ("Şişme Yatak", "YTK", 899, 3499),
    ("Organik Fındık Ezmesi", "FND", 119, 329),
    ("Örgü Hırka", "HRK", 449, 1599),
    ("Akıllı Saat", "SAT", 1999, 8999),
    ("Güneş Gözlüğü", "GZL", 299, 1999),
];

/// Seeded source of all sandbox randomness.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
}

impl Generator {
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn person(&mut self) -> Person {
        let first_name = self.pick(FIRST_NAMES).to_string();
        let last_name = self.pick(LAST_NAMES).to_string();
        let number = self.range(1, 9999);
        let domain = self.pick(&["gmail.com", "hotmail.com", "yandex.com.tr", "outlook.com"]);
        let email = format!(
            "{}.{}{number}@{domain}",
            ascii_lower(&first_name),
            ascii_lower(&last_name)
        );
        let operator = self.pick(&["532", "533", "535", "542", "505", "555", "544"]);
        let phone = format!("0{operator}{}", self.digits(7));
        Person {
            first_name,
            last_name,
            email,
            phone,
        }
    }

    pub fn address(&mut self) -> Address {
        let (city, district, postal_prefix) = *self.pick(PLACES);
        let street = self.pick(STREETS);
        let line = format!("{street} No:{} D:{}", self.range(1, 240), self.range(1, 24));
        Address {
            line,
            district: district.to_string(),
            city: city.to_string(),
            postal_code: format!("{postal_prefix}{:02}", self.range(0, 99)),
        }
    }

    pub fn product(&mut self) -> Product {
        let (name, stem, lo, hi) = *self.pick(PRODUCTS);
        let sku = format!("{stem}-{}", self.digits(5));
        let whole = self.range(lo as usize, hi as usize);
        // Shops like prices ending in ,90 or ,99 and sometimes use plain round numbers.
        let cents = *self.pick(&[0i64, 50, 90, 99, 99, 90]);
        Product {
            sku,
            name: name.to_string(),
            unit_price: Decimal::new(whole as i64 * 100 + cents, 2),
        }
    }

    /// A whole-second instant within the last `within_days` days before `now`.
    pub fn placed_at(&mut self, now: DateTime<Utc>, within_days: u32) -> DateTime<Utc> {
        let span = i64::from(within_days.max(1)) * 86_400;
        let back = self.rng.random_range(1..=span);
        let at = now - Duration::seconds(back);
        at - Duration::nanoseconds(i64::from(at.timestamp_subsec_nanos()))
    }

    /// Changes up to `n` of the `candidates` (open orders), drawn at random without replacement:
    /// `change` changes one and returns its external id, or `None` when it could not be changed.
    /// Returns the external ids of the orders changed, in the order of the draws.
    pub fn change_some<T>(
        &mut self,
        mut candidates: Vec<T>,
        n: usize,
        mut change: impl FnMut(&mut Generator, T) -> Option<String>,
    ) -> Vec<String> {
        let mut changed = Vec::with_capacity(n.min(candidates.len()));
        while changed.len() < n && !candidates.is_empty() {
            let pick = self.range(0, candidates.len() - 1);
            let candidate = candidates.swap_remove(pick);
            changed.extend(change(self, candidate));
        }
        changed
    }

    /// A number in `lo..=hi` (both ends inclusive); `lo` when `hi < lo`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        self.rng.random_range(lo..=hi)
    }

    /// True with probability `p` (clamped to 0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }

    /// One element of a non-empty slice.
    ///
    /// # Panics
    /// When `items` is empty (the sandbox only picks from its own constant tables).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    /// An amount with two decimal places in `lo..=hi`.
    pub fn amount(&mut self, lo: impl Into<Decimal>, hi: impl Into<Decimal>) -> Decimal {
        let cents = |d: Decimal| {
            (d * Decimal::ONE_HUNDRED)
                .trunc()
                .try_into()
                .unwrap_or(0i64)
        };
        let (lo, hi) = (cents(lo.into()), cents(hi.into()));
        let value = if hi <= lo {
            lo
        } else {
            self.rng.random_range(lo..=hi)
        };
        Decimal::new(value, 2)
    }

    /// `n` random decimal digits (the first may be zero).
    pub fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + self.rng.random_range(0..10u8)))
            .collect()
    }

    /// A random (version 4) UUID in its hyphenated lowercase form, drawn from the seeded RNG.
    pub fn uuid(&mut self) -> String {
        let bytes: [u8; 16] = self.rng.random();
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }
}

/// Lowercase ASCII transliteration of a Turkish name, for e-mail addresses.
fn ascii_lower(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            'ç' | 'Ç' => 'c',
            'ğ' | 'Ğ' => 'g',
            'ı' | 'I' | 'İ' | 'i' => 'i',
            'ö' | 'Ö' => 'o',
            'ş' | 'Ş' => 's',
            'ü' | 'Ü' => 'u',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::Generator;

    #[test]
    fn change_some_changes_each_candidate_at_most_once_until_n_took() {
        let mut generator = Generator::new(7);
        // Odd candidates cannot be changed: the draws go on past them until 5 changes took.
        let mut tried = Vec::new();
        let changed = generator.change_some((0..20).collect(), 5, |_, i: u32| {
            tried.push(i);
            i.is_multiple_of(2).then(|| i.to_string())
        });
        assert_eq!(changed.len(), 5);
        assert!(
            changed
                .iter()
                .all(|id| id.parse::<u32>().unwrap().is_multiple_of(2))
        );
        assert_eq!(tried.iter().collect::<HashSet<_>>().len(), tried.len());
        assert!(tried.len() >= 5);

        // Fewer changeable candidates than asked for: every one is tried once, and all changeable change.
        let mut tried = Vec::new();
        let changed = generator.change_some((0..6).collect(), 10, |_, i: u32| {
            tried.push(i);
            (i < 3).then(|| i.to_string())
        });
        tried.sort_unstable();
        assert_eq!(tried, vec![0, 1, 2, 3, 4, 5]);
        let mut changed: Vec<u32> = changed.iter().map(|id| id.parse().unwrap()).collect();
        changed.sort_unstable();
        assert_eq!(changed, vec![0, 1, 2]);
    }

    #[test]
    fn change_some_draws_at_random_and_the_same_seed_draws_alike() {
        let draw = |seed| {
            Generator::new(seed)
                .change_some((0..1000).collect(), 10, |_, i: u32| Some(i.to_string()))
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
        assert_ne!(draw(3), (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}
