use super::*;

const HEADER: &str = "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end";

fn read(csv: &str) -> Vec<Row> {
    ManifestReader::new(csv.as_bytes(), "m-test")
        .expect("header")
        .collect()
}

fn accepted(rows: &[Row]) -> Vec<&pb::ParcelManifested> {
    rows.iter()
        .filter_map(|r| match r {
            Row::Accepted { parcel, .. } => Some(parcel.as_ref()),
            Row::Rejected(_) => None,
        })
        .collect()
}

fn rejected(rows: &[Row]) -> Vec<&RowError> {
    rows.iter()
        .filter_map(|r| match r {
            Row::Rejected(e) => Some(e),
            Row::Accepted { .. } => None,
        })
        .collect()
}

#[test]
fn valid_rows_become_parcels_with_their_window_in_utc() {
    let rows = read(&format!(
        "{HEADER}\n\
         SE-1,nordshop,SE,STO-1,2026-11-23,Drottninggatan 1,111 51,Stockholm,59.3326,18.0649,doorstep,1.25,,\n\
         FI-1,kotimarket,fi,HEL-1,2026-11-23,Mannerheimintie 1,00100,Helsinki,60.1699,24.9384,in_home,0.4,09:00,12:00\n"
    ));
    let ok = accepted(&rows);
    assert_eq!(ok.len(), 2, "{rows:?}");
    let se = ok[0];
    assert_eq!(se.parcel_id, "SE-1");
    assert_eq!(se.weight_grams, 1250);
    assert_eq!(se.service, pb::Service::Doorstep as i32);
    assert_eq!(se.manifest_id, "m-test");
    assert_eq!(se.manifest_line, 2);
    let fi = ok[1];
    assert_eq!(fi.country, pb::Country::Fi as i32);
    let w = fi.in_home_window.as_ref().expect("window");
    assert_eq!(w.zone, "Europe/Helsinki");
    // 09:00 in Helsinki in November is 07:00 UTC.
    assert_eq!(
        w.start_utc.as_ref().expect("start").seconds % 86_400,
        7 * 3600
    );
    assert_eq!(fi.manifest_line, 3);
}

#[test]
fn every_bad_row_names_its_line_and_field_and_the_good_rows_survive() {
    let rows = read(&format!(
        "{HEADER}\n\
         SE-1,nordshop,SE,STO-1,2026-11-23,Street 1,111 51,Stockholm,59.3,18.0,doorstep,1,,\n\
         SE-2,nordshop,DE,STO-1,2026-11-23,Street 2,111 51,Stockholm,59.3,18.0,doorstep,1,,\n\
         SE-3,nordshop,SE,STO-1,2026-13-01,Street 3,111 51,Stockholm,59.3,18.0,doorstep,1,,\n\
         SE-4,nordshop,SE,STO-1,2026-11-23,Street 4,111 51,Stockholm,95.0,18.0,doorstep,1,,\n\
         SE-5,nordshop,SE,STO-1,2026-11-23,Street 5,111 51,Stockholm,59.3,18.0,drone,1,,\n\
         SE-6,nordshop,SE,STO-1,2026-11-23,Street 6,111 51,Stockholm,59.3,18.0,in_home,1,,\n\
         SE-7,nordshop,SE,STO-1,2026-11-23,Street 7,111 51,Stockholm,59.3,18.0,in_home,1,12:00,09:00\n\
         SE 8,nordshop,SE,STO-1,2026-11-23,Street 8,111 51,Stockholm,59.3,18.0,doorstep,1,,\n\
         SE-9,nordshop,SE,STO-1,2026-11-23,Street 9,111 51,Stockholm,59.3,18.0,doorstep,-2,,\n\
         SE-10,nordshop,SE,STO-1,2026-11-23,,111 51,Stockholm,59.3,18.0,doorstep,1,,\n\
         SE-11,nordshop,SE,STO-1\n\
         \n\
         SE-12,nordshop,SE,STO-1,2026-11-23,Street 12,111 51,Stockholm,59.3,18.0,locker,2.5,,\n"
    ));
    let ok: Vec<&str> = accepted(&rows)
        .iter()
        .map(|p| p.parcel_id.as_str())
        .collect();
    assert_eq!(ok, vec!["SE-1", "SE-12"]);
    let bad: Vec<(u64, &str)> = rejected(&rows)
        .iter()
        .map(|e| (e.line, e.field.as_str()))
        .collect();
    assert_eq!(
        bad,
        vec![
            (3, "country"),
            (4, "delivery_date"),
            (5, "latitude"),
            (6, "service"),
            (7, "window_start"),
            (8, "window_end"),
            (9, "parcel_id"),
            (10, "weight_kg"),
            (11, "address"),
            (12, "delivery_date"),
        ]
    );
    let messages: Vec<String> = rejected(&rows).iter().map(ToString::to_string).collect();
    assert_eq!(
        messages[0],
        "line 3, field country: \"DE\" is not one of DK, FI, NO, SE"
    );
    assert!(
        messages[2].contains("95 is not in -90..90"),
        "{}",
        messages[2]
    );
    assert!(
        messages[4].contains("in-home parcels need the resident's window"),
        "{}",
        messages[4]
    );
    assert!(
        messages[9].contains("the row has 4 fields"),
        "{}",
        messages[9]
    );
}

#[test]
fn a_header_without_required_columns_is_refused_whole() {
    let err =
        ManifestReader::new("parcel_id,country\nSE-1,SE\n".as_bytes(), "m").expect_err("missing");
    let msg = err.to_string();
    assert!(
        msg.starts_with("line 1: the header lacks column(s) partner_id, depot_id"),
        "{msg}"
    );
    let err = ManifestReader::new(format!("{HEADER},city\n").as_bytes(), "m").expect_err("twice");
    assert_eq!(err.to_string(), "line 1: column city appears twice");
}

#[test]
fn columns_may_come_in_any_order() {
    let rows = read(
        "weight_kg,service,parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,window_start,window_end\n\
         2,locker,NO-1,fjallgear,NO,OSL-1,2026-11-23,Karl Johans gate 1,0154,Oslo,59.91,10.75,,\n",
    );
    assert_eq!(accepted(&rows)[0].parcel_id, "NO-1");
    assert_eq!(accepted(&rows)[0].weight_grams, 2000);
}

#[test]
fn rejects_can_be_fixed_and_loaded_again() {
    let input = format!(
        "{HEADER}\n\
         DK-1,nordshop,DK,CPH-1,2026-11-23,Strøget 1,1160,København,55.68,12.57,doorstep,1,,\n\
         DK-2,nordshop,DK,CPH-1,2026-11-23,\"Nørregade 2, 1. tv\",1165,København,55.68,12.57,in_home,1,,\n"
    );
    let rows = read(&input);
    assert_eq!(accepted(&rows).len(), 1);
    let mut rejects = RejectsWriter::new(Vec::new()).expect("rejects");
    for e in rejected(&rows) {
        rejects.write(e).expect("write");
    }
    let text = String::from_utf8(rejects.finish().expect("finish")).expect("utf-8");
    assert!(text.starts_with(&format!("{HEADER},error\n")), "{text}");
    assert!(
        text.contains("\"Nørregade 2, 1. tv\""),
        "quoted as read: {text}"
    );
    assert!(text.contains("line 3, field window_start"), "{text}");

    // The planner adds the window and loads the rejects file as it is.
    let fixed = text.replace("in_home,1,,", "in_home,1,10:00,14:00");
    let rows = read(&fixed);
    assert!(rejected(&rows).is_empty(), "{rows:?}");
    let parcel = accepted(&rows)[0];
    assert_eq!(parcel.parcel_id, "DK-2");
    assert_eq!(
        parcel.address.as_ref().map(|a| a.street.as_str()),
        Some("Nørregade 2, 1. tv")
    );
}

#[test]
fn windows_on_dst_nights_resolve_to_real_time() {
    // 2026-10-25: clocks in Oslo go back at 03:00 to 02:00; 01:00-04:00 is four hours.
    let rows = read(&format!(
        "{HEADER}\n\
         NO-1,fjallgear,NO,OSL-1,2026-10-25,Gate 1,0150,Oslo,59.91,10.75,in_home,1,01:00,04:00\n\
         NO-2,fjallgear,NO,OSL-1,2026-03-29,Gate 2,0150,Oslo,59.91,10.75,in_home,1,02:10,02:50\n"
    ));
    let ok = accepted(&rows);
    assert_eq!(ok.len(), 1);
    let w = ok[0].in_home_window.as_ref().expect("window");
    let secs =
        w.end_utc.as_ref().expect("end").seconds - w.start_utc.as_ref().expect("start").seconds;
    assert_eq!(secs, 4 * 3600);
    // 02:10-02:50 on the spring-forward night never happens.
    let bad = rejected(&rows);
    assert_eq!((bad[0].line, bad[0].field.as_str()), (3, "window_start"));
    assert!(bad[0].message.contains("is empty"), "{}", bad[0].message);
}

/// Produces a large manifest on the fly, so the test holds no file in memory.
struct Generated {
    rows: u64,
    next: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl io::Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.next == 0 {
                self.buf.extend_from_slice(HEADER.as_bytes());
                self.buf.push(b'\n');
            }
            while self.buf.len() < 64 * 1024 && self.next < self.rows {
                let n = self.next;
                let bad = n % 1000 == 500;
                self.buf.extend_from_slice(
                    format!(
                        "SE-{n:08},nordshop,SE,STO-1,2026-11-23,Street {n},111 51,Stockholm,{},18.0,doorstep,1.5,,\n",
                        if bad { "north" } else { "59.33" }
                    )
                    .as_bytes(),
                );
                self.next += 1;
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn a_large_manifest_streams_row_by_row() {
    let rows = 200_000;
    let input = Generated {
        rows,
        next: 0,
        buf: Vec::new(),
        pos: 0,
    };
    let (mut ok, mut bad, mut last_line) = (0u64, 0u64, 0u64);
    for row in ManifestReader::new(input, "big").expect("header") {
        match row {
            Row::Accepted { line, values, .. } => {
                assert_eq!(values.len(), COLUMNS.len());
                ok += 1;
                last_line = line;
            }
            Row::Rejected(e) => {
                assert_eq!(e.field, "latitude");
                bad += 1;
            }
        }
    }
    assert_eq!(bad, rows / 1000);
    assert_eq!(ok + bad, rows);
    assert_eq!(last_line, rows + 1);
}

#[test]
fn the_bundled_sample_manifests_load_without_rejects() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut countries = Vec::new();
    for cc in ["dk", "fi", "no", "se"] {
        let path = dir.join(format!("2026-11-23-{cc}.csv"));
        let file = std::fs::File::open(&path).expect("sample manifest");
        let rows: Vec<Row> = ManifestReader::new(file, cc).expect("header").collect();
        assert!(
            rejected(&rows).is_empty(),
            "{}: {:?}",
            path.display(),
            rejected(&rows)
        );
        let ok = accepted(&rows);
        assert_eq!(ok.len(), 60, "{}", path.display());
        assert!(ok.iter().any(|p| p.service == pb::Service::InHome as i32));
        countries.push(ok[0].country);
    }
    assert_eq!(
        countries,
        [
            pb::Country::Dk,
            pb::Country::Fi,
            pb::Country::No,
            pb::Country::Se
        ]
        .map(|c| c as i32)
    );
}

const GOOD: &str = "nordshop,SE,STO-1,2026-11-23,Street 1,111 51,Stockholm,59.3,18.0,doorstep,1,,";

#[test]
fn a_field_or_an_id_over_its_limit_rejects_its_row_and_no_other() {
    let long_id = "A".repeat(MAX_ID_BYTES + 1);
    let long_city = "x".repeat(MAX_FIELD_BYTES + 1);
    let rows = read(&format!(
        "{HEADER}\n\
         SE-1,{GOOD}\n\
         {long_id},{GOOD}\n\
         SE-3,nordshop,SE,STO-1,2026-11-23,Street 1,111 51,{long_city},59.3,18.0,doorstep,1,,\n\
         SE-4,{GOOD}\n"
    ));
    let ok: Vec<&str> = accepted(&rows)
        .iter()
        .map(|p| p.parcel_id.as_str())
        .collect();
    assert_eq!(ok, vec!["SE-1", "SE-4"]);
    let bad = rejected(&rows);
    assert_eq!(
        bad.iter()
            .map(|e| (e.line, e.field.as_str()))
            .collect::<Vec<_>>(),
        vec![(3, "parcel_id"), (4, "city")]
    );
    assert!(
        bad[0]
            .to_string()
            .contains("is 65 bytes, over the limit of 64 bytes for an id"),
        "{}",
        bad[0]
    );
    assert!(
        bad[1]
            .to_string()
            .contains("is 1025 bytes, over the limit of 1024 bytes for a field"),
        "{}",
        bad[1]
    );
    // At the limit is fine.
    let id = "A".repeat(MAX_ID_BYTES);
    let rows = read(&format!("{HEADER}\n{id},{GOOD}\n"));
    assert_eq!(accepted(&rows).len(), 1, "{rows:?}");
}

/// An input that counts what was read from it, and is endless unless told.
struct Endless {
    head: Vec<u8>,
    pos: usize,
    fill: u8,
    budget: u64,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl io::Read for Endless {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = out.len().min(self.head.len() - self.pos);
            out[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        let n = (out.len() as u64).min(self.budget) as usize;
        out[..n].fill(self.fill);
        self.budget -= n as u64;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

#[test]
fn a_huge_line_is_cut_at_the_record_limit_and_an_unclosed_quote_costs_its_line() {
    // A 100 MB line, then the end of the input: one rejected row, and the
    // row before it is kept.
    let read_bytes = std::rc::Rc::new(std::cell::Cell::new(0));
    let input = Endless {
        head: format!("{HEADER}\nSE-1,{GOOD}\nSE-2,").into_bytes(),
        pos: 0,
        fill: b'x',
        budget: 100 << 20,
        read: read_bytes.clone(),
    };
    let rows: Vec<Row> = ManifestReader::new(input, "m").expect("header").collect();
    assert_eq!(read_bytes.get(), 100 << 20, "read through, not stopped");
    assert_eq!(accepted(&rows).len(), 1);
    let bad = rejected(&rows);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0].line, bad[0].field.as_str()), (3, "row"));
    assert!(
        bad[0]
            .message
            .contains(&format!("longer than {MAX_RECORD_BYTES} bytes")),
        "{}",
        bad[0]
    );

    // A quote opened and never closed costs its own line, no more: every
    // row after it is read.
    let mut text = format!("{HEADER}\nSE-1,{GOOD}\n\"SE-2,{GOOD}\n");
    let mut rows_after = 0;
    while text.len() < 3 * MAX_RECORD_BYTES {
        text.push_str(&format!("SE-X{rows_after},{GOOD}\n"));
        rows_after += 1;
    }
    let rows = read(&text);
    let ok: Vec<&str> = accepted(&rows)
        .iter()
        .map(|p| p.parcel_id.as_str())
        .collect();
    assert_eq!(ok.len(), 1 + rows_after);
    assert_eq!(ok[..2], ["SE-1", "SE-X0"]);
    let bad = rejected(&rows);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0].line, bad[0].field.as_str()), (3, "parcel_id"));
    assert!(
        bad[0].message.contains("not closed on this line"),
        "{}",
        bad[0]
    );

    // A header over the limit refuses the file, naming the limit.
    let header = format!("{HEADER},{}\n", "y".repeat(MAX_RECORD_BYTES));
    let err = ManifestReader::new(header.as_bytes(), "m").expect_err("refused");
    assert!(
        err.to_string()
            .contains(&format!("longer than {MAX_RECORD_BYTES} bytes")),
        "{err}"
    );
}

#[test]
fn bad_utf_8_rejects_its_row_on_its_own_line() {
    let mut input = format!("{HEADER}\nSE-1,{GOOD}\n").into_bytes();
    input.extend_from_slice(b"SE-2,nord\xffshop");
    input.extend_from_slice(&GOOD.as_bytes()[8..]);
    input.extend_from_slice(format!("\nSE-3,{GOOD}\n").as_bytes());
    let rows: Vec<Row> = ManifestReader::new(input.as_slice(), "m")
        .expect("header")
        .collect();
    assert_eq!(accepted(&rows).len(), 2);
    let bad = rejected(&rows);
    assert_eq!((bad[0].line, bad[0].field.as_str()), (3, "row"));
    assert!(
        bad[0].message.contains("field 2 is not valid UTF-8"),
        "{}",
        bad[0]
    );
}

/// Reads `input` through a pushed reader, `size` bytes a push, and returns
/// its rows and how often it asked for input before the end.
fn read_pushed(input: &[u8], size: usize) -> (Vec<Row>, usize) {
    let mut reader = ManifestReader::pushed("m");
    let mut chunks = input.chunks(size);
    let (mut rows, mut asked) = (Vec::new(), 0);
    loop {
        match reader.next_row().expect("header") {
            Next::Row(row) => rows.push(row),
            Next::NeedInput => {
                asked += 1;
                match chunks.next() {
                    Some(chunk) => reader.push(chunk),
                    None => reader.end(),
                }
            }
            Next::End => return (rows, asked),
        }
    }
}

#[test]
fn a_pushed_reader_reads_what_a_blocking_one_does_however_the_bytes_are_cut() {
    // A byte order mark, a line ending inside a quote, a bad row, a record
    // over the limit and one without a final line break: every cut of the
    // bytes between pushes gives the same rows on the same lines.
    let mut input = b"\xef\xbb\xbf".to_vec();
    input.extend_from_slice(
        format!(
            "{HEADER}\r\nSE-1,{GOOD}\n\n\"SE-2\",{GOOD}\nSE-3,nordshop,SE,STO-1,2026-11-23,\"Gatan\n3\",111 51,Stockholm,59.3,18.0,doorstep,many,,\nSE-4,{}\nSE-5,{GOOD}",
            "z".repeat(MAX_RECORD_BYTES)
        )
        .as_bytes(),
    );
    let whole: Vec<Row> = ManifestReader::new(input.as_slice(), "m")
        .expect("header")
        .collect();
    assert_eq!(accepted(&whole).len(), 3, "{whole:?}");
    let lines: Vec<_> = rejected(&whole).iter().map(|r| r.line).collect();
    assert_eq!(lines, [5, 6, 7], "{whole:?}");
    for size in [1, 2, 3, 7, 64, 1000, input.len()] {
        let (rows, asked) = read_pushed(&input, size);
        assert_eq!(rows, whole, "pushed {size} bytes at a time");
        assert_eq!(asked, input.len().div_ceil(size) + 1, "asked once a push");
    }
}

#[test]
fn a_pushed_reader_refuses_a_bad_header_once_it_has_come_in_and_reports_a_failed_input() {
    let mut reader = ManifestReader::pushed("m");
    assert_eq!(reader.next_row().expect("no header yet"), Next::NeedInput);
    reader.push(b"parcel_id,partner");
    assert_eq!(reader.next_row().expect("no header yet"), Next::NeedInput);
    reader.push(b"_id\nSE-1,nordshop\n");
    let err = reader.next_row().expect_err("columns missing");
    assert!(matches!(err, Error::MissingColumns { .. }), "{err}");
    assert_eq!(reader.next_row().expect("ended"), Next::End);

    // The input breaking off: the rows pushed before it, then one rejected
    // row saying why, then the end.
    let mut reader = ManifestReader::pushed("m");
    reader.push(format!("{HEADER}\nSE-1,{GOOD}\nSE-2,nord").as_bytes());
    reader.fail(io::Error::other("the client went away"));
    let mut rows = Vec::new();
    while let Next::Row(row) = reader.next_row().expect("rows") {
        rows.push(row);
    }
    assert_eq!(accepted(&rows).len(), 1);
    let bad = rejected(&rows);
    assert_eq!(bad.len(), 1);
    assert!(
        bad[0].message.contains("the client went away"),
        "{}",
        bad[0]
    );
    assert_eq!(reader.next_row().expect("ended"), Next::End);
}

#[test]
fn a_closing_quote_left_out_costs_its_own_row_and_takes_no_row_below_into_it() {
    // Read as CSV, SE-1's address would run on to the quote before
    // Kungsgatan, and the rest of SE-2's line would fill SE-1's other
    // columns: SE-1 accepted with SE-2's place, SE-2 gone, nothing said.
    let text = format!(
        "{HEADER}\n\
         SE-1,nordshop,SE,STO-1,2026-11-23,\"Drottninggatan 1, lgh 1201,111 51,Stockholm,59.33,18.06,doorstep,1.0,,\n\
         SE-2,nordshop,SE,STO-1,2026-11-23,\"Kungsgatan 2\",111 52,Stockholm,59.335,18.07,doorstep,2.0,,\n\
         SE-3,{GOOD}\n"
    );
    let rows = read(&text);
    let bad = rejected(&rows);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0].line, bad[0].field.as_str()), (2, "address"));
    assert!(bad[0].message.contains("closing quote"), "{}", bad[0]);
    // Its values as far as its line goes, for the rejects file.
    assert_eq!(
        bad[0].values[..6],
        [
            "SE-1",
            "nordshop",
            "SE",
            "STO-1",
            "2026-11-23",
            "Drottninggatan 1, lgh 1201,111 51,Stockholm,59.33,18.06,doorstep,1.0,,"
        ]
    );
    let ok = accepted(&rows);
    let ids: Vec<&str> = ok.iter().map(|p| p.parcel_id.as_str()).collect();
    assert_eq!(ids, ["SE-2", "SE-3"]);
    let se2 = ok[0].address.as_ref().expect("an address");
    assert_eq!(
        (se2.street.as_str(), se2.postal_code.as_str()),
        ("Kungsgatan 2", "111 52")
    );
    assert!(ok.iter().all(|p| !format!("{p:?}").contains('\n')));
}

#[test]
fn a_row_with_more_fields_than_the_header_is_refused() {
    // An address with a comma, not quoted: every value after it one
    // column late, and with the last columns empty the row's end looks
    // like a spare comma, so none can be trusted.
    let text = format!(
        "{HEADER}\n\
         SE-1,nordshop,SE,STO-1,2026-11-23,Storgatan 1, lgh 1101,111 51,Stockholm,59.3,18.0,doorstep,1,,\n\
         SE-2,{GOOD}\n"
    );
    let rows = read(&text);
    let bad = rejected(&rows);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!((bad[0].line, bad[0].field.as_str()), (2, "row"));
    assert!(
        bad[0].message.contains("15 fields, the header 14"),
        "{}",
        bad[0]
    );
    let ids: Vec<String> = accepted(&rows)
        .iter()
        .map(|p| p.parcel_id.clone())
        .collect();
    assert_eq!(ids, ["SE-2"]);
    // A header with a column of its own (named or not) takes rows with it.
    let text = format!("{HEADER},\nSE-3,{GOOD},\nSE-4,{GOOD}\n");
    assert_eq!(accepted(&read(&text)).len(), 2);
}
