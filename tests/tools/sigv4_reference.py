#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# sigv4_reference.py: signs the requests of tests/unit/data/sigv4/cases.json with
# botocore's S3SigV4Auth (Debian's python3-botocore) and checks that botocore gives
# each case's `expect` (the value test_sigv4 checks our signer against) and, where
# the case has one, the signature AWS's documentation prints. --write refills
# `expect` from botocore (run it once after adding a case).
import json
import sys
import datetime
from unittest import mock
from urllib.parse import quote

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class S3Config:
    def __init__(self, signing):
        self.s3 = {"payload_signing_enabled": signing}


def sign(case):
    # S3 keys are encoded once, '/' kept (botocore's S3 serializer does the same).
    url = case["scheme"] + "://" + case["host"] + quote(case["path"], safe="/~")
    req = AWSRequest(method=case["method"], url=url, data=case["body"].encode("utf-8"),
                     headers=dict(case["headers"]), params=[tuple(q) for q in case["query"]])
    if case.get("unsigned"):
        req.context["client_config"] = S3Config(False)
    when = datetime.datetime.strptime(case["date"], "%Y%m%dT%H%M%SZ")
    auth = botocore.auth.S3SigV4Auth(Credentials(case["access_key"], case["secret_key"]), "s3",
                                     case["region"])
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=when):
        auth.add_auth(req)
    return req.headers["Authorization"]


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("--check", "--write"):
        sys.exit("usage: sigv4_reference.py --check|--write CASES.json")
    path = sys.argv[2]
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    bad = 0
    for case in table["cases"]:
        got = sign(case)
        doc = case.get("aws_doc_signature")
        if doc and not got.endswith("Signature=" + doc):
            print(f"{case['name']}: botocore gives {got}, AWS's documentation {doc}")
            bad += 1
        if sys.argv[1] == "--write":
            case["expect"] = got
        elif case.get("expect") != got:
            print(f"{case['name']}: botocore gives {got}\n  the table expects {case.get('expect')}")
            bad += 1
    if sys.argv[1] == "--write" and not bad:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=2, ensure_ascii=False)
            f.write("\n")
    print(f"{len(table['cases'])} cases, {bad} mismatches (botocore {botocore.__version__})")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
