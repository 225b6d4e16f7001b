"""The hostile-name corpus: values from outside (a workflow input, an object key, a params value)
that name a file. Shared by the path rule's tests, `set_batch`'s and the monitor stage's."""

# Names a shell would act on, or that look odd, but are ordinary file names: taken exactly.
ORDINARY = [
    "data/incoming/odd name $(touch PWNED-1) ;touch PWNED-2; x.parquet",
    "data/incoming/a`touch PWNED-3`b.parquet",
    "data/incoming/q\"uo'te ${monitor.alpha}.csv",
    "data/incoming/élan-週.parquet",
    "data/incoming/with space.csv",
    "data/incoming/-leading-dash.csv",
    "data/incoming/semi;colon&amp|pipe>redirect.csv",
    "data/./incoming//x.csv",
]

# Refused, each with the reason named.
REFUSED = {
    "data/incoming/new\nline.csv": "control character",
    "data/incoming/tab\there.csv": "control character",
    "data/incoming/nul\x00.csv": "control character",
    "data/incoming/bidi\u202eevil.csv": "control character",
    "/etc/passwd": "not relative",
    "~/x.csv": "not relative",
    "../outside.csv": "climbs out",
    "data/../../outside.csv": "climbs out",
    "data\\..\\x.csv": "backslash",
    "": "not a path",
    "   ": "not a path",
}
