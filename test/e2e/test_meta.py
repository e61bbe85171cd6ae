"""META.json follows the PGXN Meta Spec 1.0.0 and agrees with the build: the
rules below are the spec's (required keys, semantic versions, terms,
version ranges, prereq phases and relationships, licenses, custom keys)."""
import json
import re

from conftest import REPO

SEMVER = r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
RANGE_ITEM = rf"(([=!]=|[<>]=?)\s*)?{SEMVER}"
RANGE = rf"^(0|{RANGE_ITEM}(,\s*{RANGE_ITEM})*)$"
TERM = r"^[^/\\\s\x00-\x1f\x7f]{2,}$"
REQUIRED = {"name", "version", "abstract", "maintainer", "license", "provides", "meta-spec"}
KNOWN = REQUIRED | {"description", "generated_by", "tags", "no_index", "prereqs", "release_status",
                    "resources"}
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd",
            "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit",
            "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0", "ssleay",
            "sun", "zlib", "open_source", "restricted", "unrestricted", "unknown"}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}


def problems(meta):
    """Every way meta breaks the PGXN Meta Spec 1.0.0."""
    out = []
    out += [f"missing key {k}" for k in sorted(REQUIRED - set(meta))]
    out += [f"unknown key {k}" for k in meta if k not in KNOWN and not re.match(r"^[xX]_.", k)]
    if not re.fullmatch(TERM, meta.get("name", "")):
        out.append("name is not a term")
    if not re.fullmatch(SEMVER, meta.get("version", "")):
        out.append("version is not a semantic version")
    if not isinstance(meta.get("abstract"), str) or not meta["abstract"]:
        out.append("abstract must be a non-empty string")
    lic = meta.get("license")
    if not (lic in LICENSES or (isinstance(lic, list) and lic and set(lic) <= LICENSES)
            or isinstance(lic, dict)):
        out.append(f"license {lic!r} is not one of the spec's")
    provides = meta.get("provides", {})
    if not isinstance(provides, dict) or not provides:
        out.append("provides must name at least one extension")
    for ext, p in provides.items():
        if not re.fullmatch(TERM, ext):
            out.append(f"provides key {ext} is not a term")
        if not re.fullmatch(SEMVER, p.get("version", "")):
            out.append(f"provides.{ext}.version is not a semantic version")
        if "file" not in p:
            out.append(f"provides.{ext} has no file")
    for phase, rels in meta.get("prereqs", {}).items():
        if phase not in PHASES:
            out.append(f"unknown prereq phase {phase}")
        for rel, reqs in rels.items():
            if rel not in RELATIONS:
                out.append(f"unknown prereq relationship {rel}")
            for name, rng in reqs.items():
                if not re.fullmatch(TERM, name) or not re.match(RANGE, str(rng)):
                    out.append(f"prereq {name}: {rng!r} is not a version range")
    spec = meta.get("meta-spec", {})
    if not re.fullmatch(r"1\.0\.\d+", spec.get("version", "")):
        out.append("meta-spec.version must be 1.0.x")
    if spec.get("url") not in (None, "https://pgxn.org/meta/spec.txt", "http://pgxn.org/meta/spec.txt"):
        out.append("meta-spec.url is not the spec's")
    if meta.get("release_status", "stable") not in ("stable", "testing", "unstable"):
        out.append("release_status must be stable, testing or unstable")
    return out


def test_meta_json_is_valid_pgxn_1_0_0_and_matches_the_build():
    meta = json.loads((REPO / "META.json").read_text())
    assert problems(meta) == []
    control = (REPO / "activity_core.control").read_text()
    version = re.search(r"default_version = '([^']+)'", control).group(1)
    assert meta["version"] == version
    ext = meta["provides"]["activity_core"]
    assert ext["version"] == version and (REPO / ext["file"]).is_file()
    assert (REPO / ext["docfile"]).is_file()
    pg = meta["prereqs"]["runtime"]["requires"]["PostgreSQL"]
    assert pg.startswith("14.0.0"), pg
    assert set(meta["x_system_requires"]) >= {"libnats", "libcurl", "jansson"}


def test_the_checker_refuses_what_the_spec_refuses():
    """The rules above are not vacuous: broken documents are caught."""
    meta = json.loads((REPO / "META.json").read_text())
    for mutate in (lambda m: m.pop("license"), lambda m: m.update(version="0.2"),
                   lambda m: m.update(license="wtfpl"), lambda m: m.update(bogus=1),
                   lambda m: m["prereqs"]["runtime"]["requires"].update(PostgreSQL="14+"),
                   lambda m: m["prereqs"].update(install={}), lambda m: m.update(provides={}),
                   lambda m: m["meta-spec"].update(version="2.0.0"), lambda m: m.update(name="a/b")):
        broken = json.loads(json.dumps(meta))
        mutate(broken)
        assert problems(broken), broken
