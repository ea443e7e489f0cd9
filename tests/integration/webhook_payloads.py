#!/usr/bin/env python3
"""webhook_payloads.py — the webhook stream of tests/integration/test_webhooks.sh.

Generates, from a seed, a mixed stream of provider webhook requests (SendGrid,
Amazon SES through SNS, Mailgun, Postmark, SparkPost) for several tenants,
signed for real with the tenants' credentials, and the exact counts tally must
end up with. Only the Python standard library and the openssl CLI (SendGrid's
ECDSA signatures) are used.

Input: a JSON config (--config) written by the shell test:
  {"now_ms": N, "seed": N,
   "tenants": {"acme": {"mailgun_signing_key": "...", "postmark_auth": "u:p",
                        "sparkpost_auth": "u:p" | "<token>", "sparkpost_mode": "basic"|"token",
                        "sendgrid_key": "/path/acme.pem", "ses_verify": false,
                        "ses_topic_arn": "arn:..."}, ...},
   "rogue_sendgrid_key": "/path/rogue.pem", "bare_tenant": "gamma", "race_copies": 12}

Output, in --out:
  req/NNNN.body, req/NNNN.hdr   one request: raw body, curl header file (-H @file)
  plan.tsv                      seq phase path expect_status expect_accepted expect_dead note
                                (expect_accepted/expect_dead are "-" unless the status is 200;
                                 they are the {"accepted":N,"dead":M} the collector answers;
                                 in the race phase expect_status is the multiset of the
                                 answers to the concurrent copies, "1x200+11x403", "12x200")
  expected.json                 {"seed", "metrics", "phases": {<phase>: {"truth": {tenant:
                                 {campaign: {"total", "variants", "first_event", "last_event"}}},
                                 "collector": {...}, "aggregate": {...}}}}, cumulative per phase

Phases, posted in order by the shell test:
  main      every provider and event kind for acme and beta, retries of the same batches
            (same bytes; re-signed), and interleaved requests that must be refused
            (bad signatures and credentials, replayed Mailgun tokens, stale timestamps),
            dead letters and pings
  bad       only refused requests (several per provider and tenant, a tenant without
            credentials, a body over the size limit): nothing may change
  race      requests the shell posts race_copies times at once: a signed Mailgun request
            (one copy passes, the others are replays of its token) and a SendGrid batch
            (every copy passes, its events count once), per tenant
  sentinel  a small accepted batch per tenant: once it is counted, the refused requests
            before it would have been too

How tally counts (the model below): events are deduplicated by (tenant, event id); a
retried request carries the same logical events (the same provider ids, or the same
fields tally derives its id from), so the model dedupes by logical event. Unique
opens/clicks are distinct recipients per (tenant, campaign); a recipient is the
tally_recipient value when the message passes one, else its email address lowercased.
Each recipient belongs to one variant of a campaign, so per-variant uniques are exact.
Opens are machine opens when the provider says so (SendGrid sg_machine_open) or the user
agent is Apple's bare "Mozilla/5.0" or a mail image proxy; clicks are bot clicks when the
user agent is a scanner (docs/classifier.md). Webhook events carry no send time, so the
send-window rules do not apply.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone

METRICS = ["sent", "delivered", "deferred", "bounced", "hard_bounced", "soft_bounced", "dropped",
           "complaints", "unsubscribes", "opens", "machine_opens", "unique_opens", "unique_human_opens",
           "clicks", "bot_clicks", "unique_clicks", "unique_human_clicks"]

HUMAN_OPEN_UAS = [
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Thunderbird/115.5.0",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)",  # human for opens
]
MACHINE_OPEN_UAS = [
    "Mozilla/5.0",  # apple_mpp_agent
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)",
    "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html",
]
HUMAN_CLICK_UAS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
]
BOT_CLICK_UAS = [
    "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))",
    "python-requests/2.31.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Microsoft Office/16.0; ms-office; MSOffice 16)",
]

ENGAGEMENT = ["delivered", "open", "open_machine", "click", "click_bot", "complaint", "unsubscribe"]
CAPS = {
    "sendgrid": {"sent", "deferred", "bounce_hard", "bounce_block", "dropped", *ENGAGEMENT},
    "ses": {"sent", "deferred", "bounce_hard", "bounce_soft", "dropped", *ENGAGEMENT},
    "ses_notif": {"delivered", "bounce_hard", "bounce_soft", "complaint"},  # notification form
    "mailgun": {"sent", "deferred", "bounce_hard", "bounce_soft", "bounce_block", "dropped", *ENGAGEMENT},
    "postmark": {"bounce_hard", "bounce_soft", "bounce_block", "dropped", *ENGAGEMENT},
    "sparkpost": {"sent", "deferred", "bounce_hard", "bounce_soft", "bounce_block", "dropped", *ENGAGEMENT},
}
# Outcomes after the send, cycled per provider so that every row of every mapping table
# appears; "eng" = delivered then engagement.
FATES = [["eng"], ["bounce_hard"], ["deferred", "eng"], ["bounce_soft"], ["eng"], ["bounce_block"],
         ["dropped"], ["deferred", "deferred", "bounce_soft"], ["eng"], ["bounce_hard"], ["eng"],
         ["dropped"], ["bounce_block"], ["eng"], ["bounce_soft"], ["eng"]]

TOPIC_OF = {"open": "events", "open_machine": "events", "click": "events", "click_bot": "events"}


def iso_ms(ms):
    d = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


class Gen:
    def __init__(self, cfg, out):
        self.cfg = cfg
        self.out = out
        self.now_ms = cfg["now_ms"]
        self.rng = random.Random(cfg["seed"])
        self.seq = 0
        self.plan = []
        self.uid = 0
        self.cycle = {}  # (provider, what) -> counter, for round-robin coverage
        # the model
        self.truth = {}  # tenant -> campaign -> {"variants": {v: counts}, "u": {(kind, v): set}, "ts": [min, max]}
        self.seen = set()  # (tenant, logical uid) counted
        self.collector = {"accepted": 0, "unauthorized": 0, "bad_request": 0,
                          "events": 0, "delivery": 0, "dead": 0}
        self.aggregate = {"events": 0, "duplicates": 0}
        self.phases = {}
        self.rvariant = {}  # (tenant, campaign, recipient idx) -> variant
        self.msgs = {t: [] for t in cfg["tenants"]}
        os.makedirs(os.path.join(out, "req"), exist_ok=True)

    # ---- helpers ---------------------------------------------------------

    def rid(self, n, alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"):
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def next_uid(self):
        self.uid += 1
        return self.uid

    def pick(self, key, options):
        """Round-robin over options per key: every option appears."""
        i = self.cycle.get(key, 0)
        self.cycle[key] = i + 1
        return options[i % len(options)]

    # ---- the model -------------------------------------------------------

    def camp(self, tenant, campaign):
        t = self.truth.setdefault(tenant, {})
        return t.setdefault(campaign, {"variants": {}, "u": {}, "ts": None})

    def count(self, tenant, ev):
        """Applies one canonical event (a dict) that a 200 answer made durable."""
        self.aggregate["events"] += 1
        key = (tenant, ev["uid"])
        if key in self.seen:
            self.aggregate["duplicates"] += 1
            return
        self.seen.add(key)
        c = self.camp(tenant, ev["campaign"])
        v = ev["variant"]
        row = c["variants"].setdefault(v, {m: 0 for m in METRICS})
        k = ev["kind"]
        inc = {"sent": ["sent"], "delivered": ["delivered"], "deferred": ["deferred"],
               "bounce_hard": ["bounced", "hard_bounced"], "bounce_soft": ["bounced", "soft_bounced"],
               "bounce_block": ["bounced"], "dropped": ["dropped"], "complaint": ["complaints"],
               "unsubscribe": ["unsubscribes"], "open": ["opens"], "open_machine": ["opens", "machine_opens"],
               "click": ["clicks"], "click_bot": ["clicks", "bot_clicks"]}[k]
        for m in inc:
            row[m] += 1
        sets = []
        if k in ("open", "open_machine"):
            sets = ["unique_opens"] + (["unique_human_opens"] if k == "open" else [])
        elif k in ("click", "click_bot"):
            sets = ["unique_clicks"] + (["unique_human_clicks"] if k == "click" else [])
        for s in sets:
            c["u"].setdefault((s, v), set()).add(ev["rkey"])
        ts = ev["ts_ms"]
        c["ts"] = [ts, ts] if c["ts"] is None else [min(c["ts"][0], ts), max(c["ts"][1], ts)]

    def snapshot(self, phase):
        truth = {}
        for tenant in list(self.cfg["tenants"]) + ([self.cfg["bare_tenant"]] if self.cfg.get("bare_tenant") else []):
            out = {}
            for name, c in sorted(self.truth.get(tenant, {}).items()):
                variants = {}
                for v, row in c["variants"].items():
                    r = dict(row)
                    for s in ("unique_opens", "unique_human_opens", "unique_clicks", "unique_human_clicks"):
                        r[s] = len(c["u"].get((s, v), set()))
                    variants[v] = r
                total = {m: sum(r[m] for r in variants.values()) for m in METRICS}
                for s in ("unique_opens", "unique_human_opens", "unique_clicks", "unique_human_clicks"):
                    total[s] = len(set().union(*[c["u"].get((s, v), set()) for v in variants]))
                assert "" not in variants or len(variants) == 1, f"{tenant}/{name}: mixed variant and none"
                out[name] = {"total": total, "variants": variants,
                             "first_event": iso_ms(c["ts"][0]), "last_event": iso_ms(c["ts"][1])}
            truth[tenant] = out
        self.phases[phase] = {"truth": truth, "collector": dict(self.collector),
                              "aggregate": dict(self.aggregate)}

    # ---- requests ----------------------------------------------------------

    def emit(self, phase, path, body, headers, status, note, items=(), tenant=None, copies=1):
        """Writes one request. items: the canonical events and dead letters it carries
        (counted only when status is 200). copies > 1 (race phase): the shell posts it that
        many times at once and status 200 means every copy passes, "once" that one copy
        passes and the others are refused (403); the plan's status column holds the
        expected multiset of statuses, e.g. "1x200+11x403"."""
        self.seq += 1
        name = "%04d" % self.seq
        if isinstance(body, str):
            body = body.encode()
        with open(os.path.join(self.out, "req", name + ".body"), "wb") as f:
            f.write(body)
        with open(os.path.join(self.out, "req", name + ".hdr"), "w") as f:
            f.write("Content-Type: application/json\n")
            for k, v in headers:
                f.write(f"{k}: {v}\n")
        acc = dead = "-"
        plan_status = str(status)
        if status == "once":
            self.collector["unauthorized"] += copies - 1
            plan_status = f"1x200+{copies - 1}x403"
            status, copies = 200, 1
        elif copies > 1:
            plan_status = f"{copies}x{status}"
        if status == 200:
            evs = [i for i in items if not i.get("dead")]
            acc, dead = len(evs), len(items) - len(evs)
            for _ in range(copies):
                self.collector["accepted"] += 1
                self.collector["dead"] += dead
                for e in evs:
                    self.collector[TOPIC_OF.get(e["kind"], "delivery")] += 1
                    self.count(tenant, e)
        elif status in (401, 403):
            self.collector["unauthorized"] += 1
        elif status == 413:  # refused by the HTTP layer before the webhook handler runs
            pass
        else:  # 400, and 404 for an unknown tenant (the collector counts it as a bad request)
            self.collector["bad_request"] += 1
        self.plan.append([name, phase, path, plan_status, str(acc), str(dead), note])

    # ---- messages and their events ----------------------------------------

    def recipients(self, tenant):
        dom = "example.com" if tenant == "acme" else "example.org"
        return [{"idx": i, "email": f"user{i:02d}@{tenant}.{dom}", "rid": f"r-{i:03d}"} for i in range(24)]

    def variant_of(self, tenant, campaign, variants, r):
        if not variants:
            return ""
        key = (tenant, campaign, r["idx"])
        if key not in self.rvariant:
            self.rvariant[key] = variants[r["idx"] % len(variants)]
        return self.rvariant[key]

    def message(self, tenant, provider, campaign, variants, mode, t0, rcpt=None, n_rcpt=1, fate=None):
        """A message and its logical events (a list of dicts, in time order)."""
        pool = self.recipients(tenant)
        caps = CAPS["ses_notif" if mode == "notif" else provider]
        if rcpt is None:
            rcpt = self.rng.choice(pool)
        v = self.variant_of(tenant, campaign, variants, rcpt)
        rcpts = [rcpt]
        if n_rcpt > 1:  # same variant for every recipient of one message
            rcpts += [r for r in pool if r is not rcpt and self.variant_of(tenant, campaign, variants, r) == v][:n_rcpt - 1]
        use_rid = mode == "meta" and n_rcpt == 1 and self.rng.random() < 0.6
        msg = {"tenant": tenant, "provider": provider, "campaign": campaign, "variant": v, "mode": mode,
               "rcpts": rcpts, "use_rid": use_rid, "t0": t0,
               "msgid": {"sendgrid": lambda: self.rid(22) + ".filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC1A4-9.0",
                         "ses": lambda: "0100018c" + self.rid(8, "0123456789abcdef") + "-" + self.rid(8, "0123456789abcdef") + "-000000",
                         "mailgun": lambda: f"20261203{self.rid(12, '0123456789')}.{self.rid(8)}@mg.{tenant}.example",
                         "postmark": lambda: "-".join(self.rid(n, "0123456789abcdef") for n in (8, 4, 4, 4, 12)),
                         "sparkpost": lambda: self.rid(20, "0123456789abcdef")}[provider](),
               "events": []}
        if fate is None:
            fate = self.pick((provider, mode, "fate"), FATES)
        steps = []
        if "sent" in caps and fate != ["dropped"]:
            steps.append("sent")
        for f in fate:
            if f == "eng":
                steps.append("delivered")
                if mode == "notif" or n_rcpt > 1:  # SES opens name every destination: none here
                    if self.rng.random() < 0.5:
                        steps.append("complaint")
                    continue
                n_open = self.pick((provider, "n_open"), [2, 1, 3, 0, 1])
                for _ in range(n_open):
                    steps.append(self.pick((provider, "open"), ["open", "open", "open_machine"]))
                n_click = self.pick((provider, "n_click"), [1, 0, 2, 1])
                for _ in range(n_click):
                    steps.append(self.pick((provider, "click"), ["click", "click_bot", "click"]))
                if self.pick((provider, "complaint"), [0, 0, 1]):
                    steps.append("complaint")
                if self.pick((provider, "unsub"), [0, 1, 0, 0]):
                    steps.append("unsubscribe")
            elif f in caps:
                steps.append(f)
            elif f in ("sent", "deferred"):  # Postmark, SES notifications: no such event
                continue
            elif f == "bounce_soft" and "deferred" in caps:  # SendGrid has no soft bounce: it defers
                steps.append("deferred")
            else:  # no block class (SES), no drop notification (SES notifications)
                steps.append("bounce_hard")
        t = t0
        quant = 1000 if provider in ("sendgrid", "sparkpost") else 1
        for k in steps:
            for r in (rcpts if k in ("sent", "delivered", "bounce_hard", "bounce_soft", "dropped") else rcpts[:1]):
                ts = (t // quant) * quant
                msg["events"].append(self.event(msg, k, r, ts))
            t += self.rng.randint(2, 900) * 1000 + self.rng.randint(0, 999)
        self.msgs[tenant].append(msg)
        return msg

    def event(self, msg, kind, r, ts):
        rkey = ("rid:" + r["rid"]) if msg["use_rid"] else ("email:" + r["email"].lower())
        e = {"kind": kind, "uid": self.next_uid(), "ts_ms": ts, "campaign": msg["campaign"],
             "variant": msg["variant"], "rkey": rkey, "r": r, "msg": msg,
             "pid": None}
        p = msg["provider"]
        if p == "sendgrid":
            e["pid"] = self.rid(22)
        elif p == "mailgun":
            e["pid"] = self.rid(22)
        elif p == "sparkpost":
            e["pid"] = str(self.rng.randint(10 ** 16, 10 ** 17 - 1))
        elif p == "postmark" and (kind.startswith("bounce") or kind in ("dropped", "complaint")):
            e["pid"] = self.rng.randint(4 * 10 ** 18, 9 * 10 ** 18)  # int64, beyond 2^53
        if kind in ("open", "open_machine"):
            e["ua"] = self.pick(("ua", kind, p), MACHINE_OPEN_UAS if kind == "open_machine" else HUMAN_OPEN_UAS)
            e["ip"] = "203.0.113.%d" % self.rng.randint(1, 254)
        if kind in ("click", "click_bot"):
            e["ua"] = self.pick(("ua", kind), BOT_CLICK_UAS if kind == "click_bot" else HUMAN_CLICK_UAS)
            e["ip"] = "198.51.100.%d" % self.rng.randint(1, 254)
            e["url"] = "https://shop.example/%s?utm=%d" % (self.rid(6), self.rng.randint(1, 99))
        return e

    def email_as_sent(self, r):
        """Providers disagree on case: some events carry the address as typed."""
        if self.rng.random() < 0.25:
            return r["email"].capitalize().replace(".example", ".EXAMPLE")
        return r["email"]

    # ---- provider renderers -------------------------------------------------

    def sg_obj(self, e):
        m = e["msg"]
        k = e["kind"]
        o = {"email": self.email_as_sent(e["r"]), "timestamp": e["ts_ms"] // 1000,
             "smtp-id": "<%s@ismtpd0001p1las1.sendgrid.net>" % m["msgid"][:22],
             "sg_event_id": e["pid"], "sg_message_id": m["msgid"]}
        name = {"sent": "processed", "delivered": "delivered", "deferred": "deferred", "bounce_hard": "bounce",
                "bounce_block": "bounce", "dropped": "dropped", "complaint": "spamreport",
                "open": "open", "open_machine": "open", "click": "click", "click_bot": "click"}.get(k)
        if k == "unsubscribe":
            name = self.pick(("sg", "unsub"), ["unsubscribe", "group_unsubscribe"])
            if name == "group_unsubscribe":
                o["asm_group_id"] = 42
        o["event"] = name
        if k == "bounce_hard":
            if self.pick(("sg", "bt"), [0, 1]):
                o["type"] = "bounce"  # else no type: a hard bounce too
            o.update(reason="550 5.1.1 The email account that you tried to reach does not exist.", status="5.1.1",
                     bounce_classification="Invalid Address")
        elif k == "bounce_block":
            o.update(type="blocked", reason="550 5.7.1 blocked by policy", status="5.7.1",
                     bounce_classification="Reputation")
        elif k == "deferred":
            o.update(response="400 try again later", attempt="1")
        elif k == "dropped":
            o.update(reason="Bounced Address", status="5.0.0")
        elif k in ("open", "open_machine"):
            o.update(useragent=e["ua"], ip=e["ip"])
            if k == "open_machine" and self.pick(("sg", "mo"), [1, 0]):
                o["sg_machine_open"] = True
                o["useragent"] = HUMAN_OPEN_UAS[0]  # the provider's flag alone decides
            else:
                o["sg_machine_open"] = False
        elif k in ("click", "click_bot"):
            o.update(useragent=e["ua"], ip=e["ip"], url=e["url"], url_offset={"index": 0, "type": "html"})
        if m["mode"] == "category":
            o["category"] = [m["campaign"], "transactional"] if self.rng.random() < 0.5 else m["campaign"]
        else:
            o["category"] = ["cat-not-the-campaign"]
            o["tally_campaign"] = m["campaign"]
        if m["variant"]:
            o["tally_variant"] = m["variant"]
        if m["use_rid"]:
            o["tally_recipient"] = e["r"]["rid"]
        return o

    def sg_sign(self, tenant_key, ts, body):
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", tenant_key, "-binary"],
                             input=str(ts).encode() + body, capture_output=True, check=True).stdout
        return [("X-Twilio-Email-Event-Webhook-Signature", base64.b64encode(sig).decode()),
                ("X-Twilio-Email-Event-Webhook-Timestamp", str(ts)),
                ("User-Agent", "SendGrid Event API")]

    def mg_body(self, tenant_cfg, e, ts=None, token=None, key=None, ed=None):
        m = e["msg"] if e else None
        if ed is None:
            ed = self.mg_ed(e)
        ts = ts if ts is not None else self.now_ms // 1000
        token = token or self.rid(50, "0123456789abcdef")
        key = key if key is not None else tenant_cfg["mailgun_signing_key"]
        sig = hmac.new(key.encode(), (str(ts) + token).encode(), hashlib.sha256).hexdigest()
        return json.dumps({"signature": {"timestamp": str(ts), "token": token, "signature": sig},
                           "event-data": ed})

    def mg_ed(self, e):
        m = e["msg"]
        k = e["kind"]
        us = self.rng.randint(0, 400)  # below half a ms: tally rounds to the ms
        ed = {"id": e["pid"], "timestamp": (e["ts_ms"] * 1000 + us) / 1e6, "log-level": "info",
              "recipient": self.email_as_sent(e["r"]), "recipient-domain": e["r"]["email"].split("@")[1],
              "message": {"headers": {"message-id": m["msgid"], "to": e["r"]["email"],
                                      "from": "news@mg.example", "subject": "Hello"},
                          "attachments": [], "size": 4221},
              "envelope": {"sender": "bounce@mg.example", "transport": "smtp", "targets": e["r"]["email"]},
              "flags": {"is-routed": False, "is-authenticated": True, "is-system-test": False, "is-test-mode": False},
              "tags": [], "campaigns": [], "user-variables": {}}
        if k == "sent":
            ed["event"] = "accepted"
            ed["method"] = "http"
        elif k == "delivered":
            ed["event"] = "delivered"
            ed["delivery-status"] = {"code": 250, "message": "OK", "tls": True, "attempt-no": 1}
        elif k == "deferred":
            ed.update(event="failed", severity="temporary", reason="generic",
                      **{"delivery-status": {"code": 452, "message": "mailbox full", "attempt-no": 1,
                                             "retry-seconds": 600}})
        elif k == "bounce_hard":
            ed.update(event="failed", severity="permanent", reason="bounce",
                      **{"delivery-status": {"code": 550, "message": "no such user"}})
        elif k == "bounce_soft":
            ed.update(event="failed", severity="permanent", reason="old")
        elif k == "bounce_block":
            ed.update(event="failed", severity="permanent", reason="espblock")
        elif k == "dropped":
            if self.pick(("mg", "drop"), [0, 1]):
                ed["event"] = "rejected"
                ed["reject"] = {"reason": "Sandbox subdomains are for test purposes only", "description": ""}
            else:
                ed.update(event="failed", severity="permanent", reason="suppress-bounce")
        elif k == "complaint":
            ed["event"] = "complained"
        elif k == "unsubscribe":
            ed["event"] = "unsubscribed"
        elif k in ("open", "open_machine"):
            ed.update(event="opened", ip=e["ip"],
                      **{"client-info": {"client-type": "mobile browser", "client-os": "iOS",
                                         "device-type": "mobile", "client-name": "Mobile Safari",
                                         "user-agent": e["ua"]}})
        elif k in ("click", "click_bot"):
            ed.update(event="clicked", ip=e["ip"], url=e["url"],
                      **{"client-info": {"client-type": "browser", "user-agent": e["ua"]}})
        if m["mode"] == "tags":
            ed["tags"] = [m["campaign"], "weekly"]
        else:
            ed["tags"] = ["not-the-campaign"]
            ed["user-variables"]["tally_campaign"] = m["campaign"]
        if m["variant"]:
            ed["user-variables"]["tally_variant"] = m["variant"]
        if m["use_rid"]:
            ed["user-variables"]["tally_recipient"] = e["r"]["rid"]
        return ed

    def pm_obj(self, e):
        m = e["msg"]
        k = e["kind"]

        def ts7(ms):  # 7 fractional digits and an offset; digits 4-7 below 5000 so ms is exact either way
            off = self.pick(("pm", "off"), [0, -5, 2])
            d = datetime.fromtimestamp(ms // 1000, tz=timezone(timedelta(hours=off)))
            frac = "%03d%04d" % (ms % 1000, self.rng.randint(0, 4999))
            tz = "Z" if off == 0 else d.strftime("%z")[:3] + ":" + d.strftime("%z")[3:]
            return d.strftime("%Y-%m-%dT%H:%M:%S.") + frac + tz

        email = self.email_as_sent(e["r"])
        o = {"MessageID": m["msgid"], "ServerID": 23, "MessageStream": "outbound", "Metadata": {}}
        if m["mode"] == "tag":
            o["Tag"] = m["campaign"]
        else:
            o["Tag"] = "not-the-campaign"
            o["Metadata"]["tally_campaign"] = m["campaign"]
        if m["variant"]:
            o["Metadata"]["tally_variant"] = m["variant"]
        if m["use_rid"]:
            o["Metadata"]["tally_recipient"] = e["r"]["rid"]
        if k == "delivered":
            o.update(RecordType="Delivery", Recipient=email, DeliveredAt=ts7(e["ts_ms"]),
                     Details="Test delivery webhook details")
        elif k in ("bounce_hard", "bounce_soft", "bounce_block", "dropped") or (k == "complaint" and self.pick(("pm", "cmp"), [0, 1])):
            typ = {"bounce_hard": ["HardBounce", "BadEmailAddress"], "bounce_soft": ["SoftBounce", "Transient", "DnsError"],
                   "bounce_block": ["Blocked", "SpamNotification", "DMARCPolicy"],
                   "dropped": ["ManuallyDeactivated", "SMTPApiError"], "complaint": ["SpamComplaint"]}[k]
            o.update(RecordType="Bounce", ID=e["pid"], Type=self.pick(("pm", k), typ), TypeCode=1,
                     Name="Bounce", Email=email, From="news@pm.example", BouncedAt=ts7(e["ts_ms"]),
                     Description="The server was unable to deliver your message", Details="smtp;550 5.1.1",
                     DumpAvailable=True, Inactive=k == "bounce_hard", CanActivate=True, Subject="Hello")
        elif k == "complaint":
            o.update(RecordType="SpamComplaint", ID=e["pid"], Type="SpamComplaint", TypeCode=512,
                     Email=email, From="news@pm.example", BouncedAt=ts7(e["ts_ms"]), Subject="Hello")
        elif k in ("open", "open_machine"):
            o.update(RecordType="Open", FirstOpen=True, Client={"Name": "Safari", "Company": "Apple"},
                     OS={"Name": "iOS"}, Platform="Mobile", UserAgent=e["ua"], ReadSeconds=5,
                     Geo={"IP": e["ip"], "Country": "Denmark"}, ReceivedAt=ts7(e["ts_ms"]), Recipient=email)
        elif k in ("click", "click_bot"):
            o.update(RecordType="Click", ClickLocation="HTML", Platform="Desktop", UserAgent=e["ua"],
                     OriginalLink=e["url"], Geo={"IP": e["ip"]}, ReceivedAt=ts7(e["ts_ms"]), Recipient=email)
        elif k == "unsubscribe":
            o.update(RecordType="SubscriptionChange", ChangedAt=ts7(e["ts_ms"]), Recipient=email,
                     Origin="Recipient", SuppressSending=True,
                     SuppressionReason=self.pick(("pm", "unsub"), ["ManualSuppression", None]))
        else:
            raise ValueError(k)
        return o

    def sp_obj(self, e):
        m = e["msg"]
        k = e["kind"]
        typ, cls = {"sent": ("injection", "message_event"), "delivered": ("delivery", "message_event"),
                    "deferred": ("delay", "message_event"), "complaint": ("spam_complaint", "message_event")}.get(k, (None, None))
        o = {"customer_id": "1", "event_id": e["pid"], "message_id": m["msgid"], "transmission_id": "4834" + m["msgid"][:8],
             "rcpt_to": self.email_as_sent(e["r"]), "raw_rcpt_to": e["r"]["email"],
             "timestamp": str(e["ts_ms"] // 1000), "rcpt_meta": {}, "rcpt_tags": ["t1"],
             "friendly_from": "news@sp.example", "subject": "Hello", "template_id": "tpl", "ip_pool": "default"}
        if m["mode"] == "campaign_id":
            o["campaign_id"] = m["campaign"]
        else:
            o["campaign_id"] = "not-the-campaign"
            o["rcpt_meta"]["tally_campaign"] = m["campaign"]
        if m["variant"]:
            o["rcpt_meta"]["tally_variant"] = m["variant"]
        if m["use_rid"]:
            o["rcpt_meta"]["tally_recipient"] = e["r"]["rid"]
        if k.startswith("bounce"):
            typ = self.pick(("sp", "btype"), ["bounce", "bounce", "out_of_band"])
            cls = "message_event"
            o["bounce_class"] = str(self.pick(("sp", k), {"bounce_hard": [10, 30, 25], "bounce_soft": [21, 1, 70, 24],
                                                          "bounce_block": [51, 50, 54]}[k]))
            o.update(reason="550 5.0.0 <x>... User unknown", raw_reason="550 5.0.0 User unknown", error_code="550")
        elif k == "dropped":
            typ, cls = self.pick(("sp", "drop"), [("policy_rejection", "message_event"), ("generation_rejection", "gen_event"),
                                                   ("generation_failure", "gen_event")])
        elif k == "unsubscribe":
            typ = self.pick(("sp", "unsub"), ["list_unsubscribe", "link_unsubscribe"])
            cls = "unsubscribe_event"
        elif k in ("open", "open_machine"):
            typ = self.pick(("sp", "open"), ["open", "initial_open", "amp_open", "amp_initial_open"])
            cls = "track_event"
            o.update(user_agent=e["ua"], ip_address=e["ip"])
        elif k in ("click", "click_bot"):
            typ = self.pick(("sp", "click"), ["click", "amp_click"])
            cls = "track_event"
            o.update(user_agent=e["ua"], ip_address=e["ip"], target_link_url=e["url"], target_link_name="cta")
        elif k == "deferred":
            o.update(reason="454 4.7.1 try later", num_retries="1", queue_time="1200")
        elif k == "complaint":
            o.update(fbtype="abuse", report_by="isp.example", report_to="sp.example")
        o["type"] = typ
        return {"msys": {cls: o}}

    def ses_event(self, e, group=None):
        """The SES event (the SNS Message) for logical event e, or for a group of
        events of one multi-recipient message (same kind, same time)."""
        m = e["msg"]
        k = e["kind"]
        evs = group or [e]
        t0 = m["t0"]
        mail = {"timestamp": iso_ms(t0), "source": "news@ses.example", "sendingAccountId": "123456789012",
                "messageId": m["msgid"], "destination": [], "headersTruncated": False,
                "headers": [{"name": "From", "value": "news@ses.example"}, {"name": "Subject", "value": "Hello"}],
                "commonHeaders": {"from": ["news@ses.example"], "subject": "Hello", "messageId": m["msgid"]}}
        for r in m["rcpts"]:
            addr = self.email_as_sent(r)
            if r is m["rcpts"][0] and self.pick(("ses", "display"), [0, 1, 0]):
                addr = f"User Name <{addr}>"
            mail["destination"].append(addr)
        if m["mode"] == "notif":  # identity notifications: no tags; the campaign in a header
            mail["headers"].append({"name": self.pick(("ses", "hdr"), ["X-Tally-Campaign", "x-tally_campaign"]),
                                    "value": m["campaign"]})
            if m["variant"]:
                mail["headers"].append({"name": "X-Tally-Variant", "value": m["variant"]})
        else:
            tags = {"ses:configuration-set": ["tally"], "ses:source-ip": ["192.0.2.10"],
                    "tally_campaign": [m["campaign"]]}
            if m["variant"]:
                tags["tally_variant"] = [m["variant"]]
            if m["use_rid"]:
                tags["tally_recipient"] = [e["r"]["rid"]]
            mail["tags"] = tags
        ts = iso_ms(e["ts_ms"])
        addrs = [x["r"]["email"] for x in evs]
        key = "notificationType" if m["mode"] == "notif" else "eventType"
        if k == "sent":
            return {key: "Send", "mail": mail, "send": {}}
        if k == "delivered":
            return {key: "Delivery", "mail": mail,
                    "delivery": {"timestamp": ts, "processingTimeMillis": 1200, "recipients": addrs,
                                 "smtpResponse": "250 2.6.0 Message received", "reportingMTA": "a8-1.smtp-out.amazonses.com"}}
        if k in ("bounce_hard", "bounce_soft") or (k == "dropped" and self.pick(("ses", "drop"), [0, 1]) == 1):
            bt, st = {"bounce_hard": ("Permanent", "General"), "dropped": ("Permanent", "Suppressed")}.get(
                k, None) or self.pick(("ses", "soft"), [("Transient", "MailboxFull"), ("Undetermined", "Undetermined")])
            return {key: "Bounce", "mail": mail,
                    "bounce": {"bounceType": bt, "bounceSubType": st, "timestamp": ts, "feedbackId": self.rid(20),
                               "reportingMTA": "dsn; a8-1.smtp-out.amazonses.com",
                               "bouncedRecipients": [{"emailAddress": a, "action": "failed", "status": "5.1.1",
                                                      "diagnosticCode": "smtp; 550 5.1.1 user unknown"} for a in addrs]}}
        if k == "dropped":
            e["ts_ms"] = t0  # a Reject has no time of its own: mail.timestamp
            return {key: "Reject", "mail": mail, "reject": {"reason": "Bad content"}}
        if k == "complaint":
            return {key: "Complaint", "mail": mail,
                    "complaint": {"complainedRecipients": [{"emailAddress": a} for a in addrs], "timestamp": ts,
                                  "feedbackId": self.rid(20), "complaintFeedbackType": "abuse",
                                  "userAgent": "Yahoo!-Mail-Feedback/2.0"}}
        if k == "deferred":
            return {key: "DeliveryDelay", "mail": mail,
                    "deliveryDelay": {"timestamp": ts, "delayType": "TransientCommunicationFailure",
                                      "expirationTime": iso_ms(e["ts_ms"] + 86400000),
                                      "delayedRecipients": [{"emailAddress": a, "status": "4.4.1",
                                                             "diagnosticCode": "smtp; 421 4.4.1 timeout"} for a in addrs]}}
        if k in ("open", "open_machine"):
            return {key: "Open", "mail": mail, "open": {"ipAddress": e["ip"], "timestamp": ts, "userAgent": e["ua"]}}
        if k in ("click", "click_bot"):
            return {key: "Click", "mail": mail,
                    "click": {"ipAddress": e["ip"], "timestamp": ts, "userAgent": e["ua"], "link": e["url"],
                              "linkTags": {"samplekey0": ["samplevalue0"]}}}
        if k == "unsubscribe":
            return {key: "Subscription", "mail": mail,
                    "subscription": {"contactList": "news", "timestamp": ts, "source": "UnsubscribeFooterLink",
                                     "newTopicPreferences": {"unsubscribeAll": True, "topicSubscriptionStatus": []},
                                     "oldTopicPreferences": {"unsubscribeAll": False}}}
        raise ValueError(k)

    def sns(self, tenant, message, msg_type="Notification", signed=True, topic=None, cert_host="sns.us-east-1.amazonaws.com",
            sns_id=None):
        tc = self.cfg["tenants"][tenant]
        env = {"Type": msg_type, "MessageId": sns_id or self.sns_id(),
               "TopicArn": topic or tc["ses_topic_arn"], "Subject": None,
               "Message": message if isinstance(message, str) else json.dumps(message),
               "Timestamp": iso_ms(self.now_ms - self.rng.randint(0, 3000))}
        if signed:  # looks like SNS; not verifiable here (the certificate is Amazon's)
            env.update(SignatureVersion="1", Signature=base64.b64encode(self.rng.randbytes(256)).decode(),
                       SigningCertURL=f"https://{cert_host}/SimpleNotificationService-{self.rid(32, '0123456789abcdef')}.pem",
                       UnsubscribeURL=f"https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={tc['ses_topic_arn']}:{self.rid(8)}")
        return json.dumps(env, indent=2), [("x-amz-sns-message-type", msg_type),
                                           ("x-amz-sns-topic-arn", env["TopicArn"]),
                                           ("User-Agent", "Amazon Simple Notification Service Agent")]

    def sns_id(self):
        h = "0123456789abcdef"
        return "-".join(self.rid(n, h) for n in (8, 4, 4, 4, 12))

    # ---- per-provider request streams -----------------------------------------

    def basic(self, cred):
        return ("Authorization", "Basic " + base64.b64encode(cred.encode()).decode())

    def sp_auth(self, tenant):
        tc = self.cfg["tenants"][tenant]
        if tc["sparkpost_mode"] == "token":
            return [("X-MessageSystems-Webhook-Token", tc["sparkpost_auth"])]
        return [self.basic(tc["sparkpost_auth"])]

    def batches(self, events, lo, hi):
        evs = list(events)
        # providers post roughly in time order, with some disorder
        evs.sort(key=lambda e: e["ts_ms"] + self.rng.randint(0, 1800000))
        out = []
        while evs:
            n = self.rng.randint(lo, hi)
            out.append(evs[:n])
            evs = evs[n:]
        return out

    def stream_sendgrid(self, tenant, msgs, extra_dead):
        """[(request thunk, retry thunks)] for the tenant's SendGrid messages."""
        tc = self.cfg["tenants"][tenant]
        path = f"/v1/webhooks/sendgrid/{tenant}"
        evs = [e for m in msgs for e in m["events"]]
        reqs = []
        batches = self.batches(evs, 4, 12)
        for i, b in enumerate(batches):
            pairs = [(self.sg_obj(e), e) for e in b]
            if i < len(extra_dead):  # dead letters ride along in the first batches
                pairs.insert(self.rng.randint(0, len(pairs)), (extra_dead[i][0], {"dead": True}))
            objs, items = [p[0] for p in pairs], [p[1] for p in pairs]
            body = json.dumps(objs).encode()
            ts = self.now_ms // 1000 - self.rng.randint(5, 60)
            hdrs = self.sg_sign(tc["sendgrid_key"], ts, body)
            first = (path, body, hdrs, 200, f"sendgrid batch of {len(items)}", items)
            retries = []
            mode = self.pick(("sg", "retry"), ["same", "none", "resigned", "none"])
            if mode == "same":
                retries.append((path, body, hdrs, 200, "sendgrid retry: same bytes and signature", items))
            elif mode == "resigned":
                ts2 = ts + self.rng.randint(1, 4)
                retries.append((path, body, self.sg_sign(tc["sendgrid_key"], ts2, body), 200,
                                "sendgrid retry: same body, fresh timestamp and signature", items))
            reqs.append((first, retries))
        # a batch overlapping two earlier ones (dedupe across batch boundaries)
        if len(batches) >= 2:
            ov = batches[0][:2] + batches[1][-2:]
            body = json.dumps([self.sg_obj(e) for e in ov]).encode()
            reqs.append(((path, body, self.sg_sign(tc["sendgrid_key"], self.now_ms // 1000 - 2, body), 200,
                          "sendgrid batch re-sending events of two earlier batches", ov), []))
        return reqs

    def stream_sparkpost(self, tenant, msgs, extra_dead):
        path = f"/v1/webhooks/sparkpost/{tenant}"
        auth = self.sp_auth(tenant)
        evs = [e for m in msgs for e in m["events"]]
        reqs = []
        batches = self.batches(evs, 3, 10)
        for i, b in enumerate(batches):
            pairs = [(self.sp_obj(e), e) for e in b]
            if i < len(extra_dead):
                pairs.insert(self.rng.randint(0, len(pairs)), (extra_dead[i][0], {"dead": True}))
            objs, items = [p[0] for p in pairs], [p[1] for p in pairs]
            body = json.dumps(objs).encode()
            first = (path, body, auth, 200, f"sparkpost batch of {len(items)}", items)
            retries = []
            mode = self.pick(("sp", "retry"), ["same", "none", "split", "none"])
            if mode == "same":
                retries.append((path, body, auth, 200, "sparkpost retry: same bytes", items))
            elif mode == "split" and len(objs) >= 2:  # the same events, cut into two batches
                h = len(objs) // 2
                for lo, hi in ((0, h), (h, len(objs))):
                    retries.append((path, json.dumps(objs[lo:hi]).encode(), auth, 200,
                                    "sparkpost retry: the batch split in two", items[lo:hi]))
            reqs.append((first, retries))
        for ping in ("[]", '[{"msys":{}}]'):
            reqs.append(((path, ping.encode(), auth, 200, "sparkpost test ping", []), []))
        return reqs

    def stream_single(self, tenant, provider, msgs, extra_dead):
        """Postmark, Mailgun and SES: one event (or one SES event of a multi-recipient
        message) per request."""
        tc = self.cfg["tenants"][tenant]
        path = f"/v1/webhooks/{provider}/{tenant}"
        reqs = []
        for m in msgs:
            evs = list(m["events"])
            while evs:
                e = evs.pop(0)
                group = [e]
                if provider == "ses" and len(m["rcpts"]) > 1:
                    while evs and evs[0]["kind"] == e["kind"] and evs[0]["ts_ms"] == e["ts_ms"]:
                        group.append(evs.pop(0))
                if provider == "postmark":
                    body = json.dumps(self.pm_obj(e), indent=2)
                    hdrs = [self.basic(tc["postmark_auth"])]
                    first = (path, body, hdrs, 200, f"postmark {e['kind']}", group)
                    retries = []
                    if self.pick(("pm", "retry"), [0, 1, 0]):
                        retries.append((path, body, hdrs, 200, "postmark retry: same bytes", group))
                elif provider == "mailgun":
                    ed = self.mg_ed(e)
                    body = self.mg_body(tc, e, ed=ed)
                    first = (path, body, [], 200, f"mailgun {e['kind']}", group)
                    retries = []
                    mode = self.pick(("mg", "retry"), ["none", "replay", "none", "resigned"])
                    if mode == "replay":  # the same token again: refused, changes nothing
                        retries.append((path, body, [], 403, "mailgun replayed token (same bytes)", group))
                    elif mode == "resigned":  # a new token, the same event id: counted once
                        retries.append((path, self.mg_body(tc, e, ed=ed), [], 200,
                                        "mailgun retry: new token and signature, same event-data.id", group))
                else:  # ses
                    msg = self.ses_event(e, group if len(group) > 1 else None)
                    body, hdrs = self.sns(tenant, msg)
                    first = (path, body, hdrs, 200, f"ses {e['kind']} ({len(group)} recipient(s))", group)
                    retries = []
                    mode = self.pick(("ses", "retry"), ["none", "same", "none", "republished"])
                    if mode == "same":
                        retries.append((path, body, hdrs, 200, "ses retry: SNS redelivers the same bytes", group))
                    elif mode == "republished":  # the same SES event in a new SNS envelope
                        b2, h2 = self.sns(tenant, json.loads(body)["Message"])
                        retries.append((path, b2, h2, 200, "ses: same event, new SNS MessageId", group))
                reqs.append((first, retries))
        for d in extra_dead:
            reqs.append(((path, d[0], d[1], 200, d[2], [{"dead": True}] * d[3]), []))
        return reqs

    # ---- dead letters (accepted, never counted) ---------------------------------

    def dead_sendgrid(self, tenant, campaign):
        return [({"email": "x1@dead.example", "timestamp": self.now_ms // 1000 - 100, "event": "group_resubscribe",
                  "sg_event_id": self.rid(22), "sg_message_id": self.rid(22), "tally_campaign": campaign},),
                ({"email": "x2@dead.example", "timestamp": self.now_ms // 1000 - 90, "event": "delivered",
                  "sg_event_id": self.rid(22), "sg_message_id": self.rid(22)},)]  # no campaign at all

    def dead_sparkpost(self, tenant, campaign):
        return [({"msys": {"relay_event": {"type": "relay_injection", "event_id": self.rid(17, "0123456789"),
                                           "timestamp": str(self.now_ms // 1000 - 80), "rcpt_to": "x3@dead.example",
                                           "rcpt_meta": {"tally_campaign": campaign}}}},),
                ({"msys": {"message_event": {"type": "bounce", "bounce_class": "80", "event_id": self.rid(17, "0123456789"),
                                             "timestamp": str(self.now_ms // 1000 - 70), "rcpt_to": "x4@dead.example",
                                             "message_id": self.rid(20), "rcpt_meta": {"tally_campaign": campaign}}}},)]

    def dead_postmark(self, tenant, campaign):
        tc = self.cfg["tenants"][tenant]
        auth = [self.basic(tc["postmark_auth"])]
        now = iso_ms(self.now_ms - 60000)
        base = {"MessageID": self.sns_id(), "Metadata": {"tally_campaign": campaign}, "MessageStream": "outbound"}
        return [(json.dumps(dict(base, RecordType="SubscriptionChange", ChangedAt=now, Recipient="x5@dead.example",
                                 SuppressSending=True, SuppressionReason="HardBounce")), auth,
                 "postmark suppression for a hard bounce: dead letter", 1),
                (json.dumps(dict(base, RecordType="Bounce", ID=self.rng.randint(10 ** 9, 10 ** 10), Type="AutoResponder",
                                 Email="x6@dead.example", BouncedAt=now)), auth, "postmark auto-responder: dead letter", 1),
                (json.dumps(dict(base, RecordType="SubscriptionChange", ChangedAt=now, Recipient="x7@dead.example",
                                 SuppressSending=False)), auth, "postmark reactivation: dead letter", 1)]

    def dead_mailgun(self, tenant, campaign):
        tc = self.cfg["tenants"][tenant]
        ed = {"event": "stored", "id": self.rid(22), "timestamp": self.now_ms / 1000 - 50,
              "recipient": "x8@dead.example", "user-variables": {"tally_campaign": campaign}}
        ed2 = {"event": "failed", "id": self.rid(22), "timestamp": self.now_ms / 1000 - 40,
               "recipient": "x9@dead.example", "user-variables": {"tally_campaign": campaign}}
        return [(self.mg_body(tc, None, ed=ed), [], "mailgun stored: dead letter", 1),
                (self.mg_body(tc, None, ed=ed2), [], "mailgun failed without severity: dead letter", 1)]

    def dead_ses(self, tenant, campaign):
        mail = {"timestamp": iso_ms(self.now_ms - 30000), "messageId": self.sns_id(), "destination": ["x10@dead.example"],
                "tags": {"tally_campaign": [campaign]}}
        out = []
        for msg, note, n in (
                ({"eventType": "Rendering Failure", "mail": mail,
                  "failure": {"errorMessage": "Attribute 'x' is not present", "templateName": "t"}}, "ses rendering failure", 1),
                ({"eventType": "Complaint", "mail": mail,
                  "complaint": {"complainedRecipients": [{"emailAddress": "x10@dead.example"}],
                                "timestamp": iso_ms(self.now_ms - 20000), "complaintFeedbackType": "not-spam"}},
                 "ses complaint not-spam", 1),
                ({"eventType": "Subscription", "mail": mail,
                  "subscription": {"timestamp": iso_ms(self.now_ms - 10000),
                                   "newTopicPreferences": {"unsubscribeAll": False,
                                                           "topicSubscriptionStatus": [{"topicName": "a", "subscriptionStatus": "OptIn"}]}}},
                 "ses subscription without opt-out", 1),
                ("Successfully validated SNS topic for Amazon SES event publishing.", "ses validation text", 1),
                ({"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have successfully subscribed"},
                 "ses AmazonSnsSubscriptionSucceeded: housekeeping", 0)):
            body, hdrs = self.sns(tenant, msg)
            out.append((body, hdrs, note + (": dead letter" if n else ""), n))
        body, hdrs = self.sns(tenant, "unsubscribed", msg_type="UnsubscribeConfirmation")
        out.append((body, hdrs, "ses UnsubscribeConfirmation: housekeeping", 0))
        return out

    # ---- refused requests ----------------------------------------------------

    def refused(self, tenant, other, campaign, variant, tag):
        """Requests that must be refused, each carrying events that would count
        (fresh ids, a real campaign and one that does not exist) if accepted."""
        tc, oc = self.cfg["tenants"][tenant], self.cfg["tenants"][other]
        pool = self.recipients(tenant)
        out = []

        def fresh(provider, kinds, camp=campaign):
            msg = {"tenant": tenant, "provider": provider, "campaign": camp, "variant": variant if camp == campaign else "",
                   "mode": "meta", "rcpts": [pool[0]], "use_rid": False, "t0": self.now_ms - 60000,
                   "msgid": self.rid(20), "events": []}
            return [self.event(msg, k, pool[0], (self.now_ms - 60000) // 1000 * 1000) for k in kinds]

        # SendGrid
        sp = f"/v1/webhooks/sendgrid/{tenant}"
        evs = fresh("sendgrid", ["delivered", "open", "click"]) + fresh("sendgrid", ["delivered"], "forged-campaign")
        body = json.dumps([self.sg_obj(e) for e in evs]).encode()
        ts = self.now_ms // 1000
        out.append((sp, body, self.sg_sign(self.cfg["rogue_sendgrid_key"], ts, body), 403, f"{tag} sendgrid: signed with another key"))
        out.append((sp, body, self.sg_sign(oc["sendgrid_key"], ts, body), 403, f"{tag} sendgrid: signed with the other tenant's key"))
        good = self.sg_sign(tc["sendgrid_key"], ts, body)
        out.append((sp, body.replace(b'"delivered"', b'"processed"', 1), good, 403, f"{tag} sendgrid: body changed after signing"))
        out.append((sp, body, [(good[0][0], good[0][1])], 401, f"{tag} sendgrid: no timestamp header"))
        out.append((sp, body, [], 401, f"{tag} sendgrid: no signature headers"))
        stale = ts - 73 * 3600
        out.append((sp, body, self.sg_sign(tc["sendgrid_key"], stale, body), 403, f"{tag} sendgrid: signed 73 h ago"))
        out.append((sp, body, self.sg_sign(tc["sendgrid_key"], ts + 3600, body), 403, f"{tag} sendgrid: signed 1 h in the future"))
        out.append((sp, b'[{"event":"delivered",', self.sg_sign(tc["sendgrid_key"], ts, b'[{"event":"delivered",'), 400,
                    f"{tag} sendgrid: validly signed, malformed JSON"))
        # Mailgun
        mp = f"/v1/webhooks/mailgun/{tenant}"
        e = fresh("mailgun", ["delivered"])[0]
        ed = self.mg_ed(e)
        now_s = self.now_ms // 1000
        out.append((mp, self.mg_body(tc, e, ed=ed, key="not-the-key"), [], 403, f"{tag} mailgun: wrong signing key"))
        out.append((mp, self.mg_body(tc, e, ed=ed, key=oc["mailgun_signing_key"]), [], 403, f"{tag} mailgun: the other tenant's key"))
        out.append((mp, self.mg_body(tc, e, ed=ed, ts=now_s - 600), [], 403, f"{tag} mailgun: timestamp 10 min old"))
        out.append((mp, self.mg_body(tc, e, ed=ed, ts=now_s + 600), [], 403, f"{tag} mailgun: timestamp 10 min ahead"))
        b = json.loads(self.mg_body(tc, e, ed=ed))
        b["signature"]["signature"] = b["signature"]["signature"][:-1] + ("0" if b["signature"]["signature"][-1] != "0" else "1")
        out.append((mp, json.dumps(b), [], 403, f"{tag} mailgun: one hex digit of the signature changed"))
        b = json.loads(self.mg_body(tc, e, ed=ed))
        del b["signature"]["signature"]
        out.append((mp, json.dumps(b), [], 401, f"{tag} mailgun: no signature.signature"))
        # Postmark
        pp = f"/v1/webhooks/postmark/{tenant}"
        e = fresh("postmark", ["delivered"])[0]
        body = json.dumps(self.pm_obj(e))
        user = tc["postmark_auth"].split(":")[0]
        out.append((pp, body, [self.basic(user + ":wrong-password")], 403, f"{tag} postmark: wrong password"))
        out.append((pp, body, [self.basic(oc["postmark_auth"])], 403, f"{tag} postmark: the other tenant's credentials"))
        out.append((pp, body, [], 401, f"{tag} postmark: no Authorization"))
        out.append((pp, body, [("Authorization", "Bearer " + tc["postmark_auth"])], 401, f"{tag} postmark: not Basic"))
        # SparkPost
        ssp = f"/v1/webhooks/sparkpost/{tenant}"
        evs = fresh("sparkpost", ["delivered", "open"])
        body = json.dumps([self.sp_obj(x) for x in evs])
        out.append((ssp, body, [self.basic("user:wrong")], 403, f"{tag} sparkpost: wrong Basic auth"))
        out.append((ssp, body, [("X-MessageSystems-Webhook-Token", "wrong-token")], 403, f"{tag} sparkpost: wrong token header"))
        out.append((ssp, body, [], 401, f"{tag} sparkpost: no credentials"))
        # SES
        sesp = f"/v1/webhooks/ses/{tenant}"
        e = fresh("ses", ["delivered"])[0]
        msg = self.ses_event(e)
        if tc["ses_verify"]:
            b, h = self.sns(tenant, msg, signed=False)
            out.append((sesp, b, h, 401, f"{tag} ses: unsigned SNS message, verification on"))
            b, h = self.sns(tenant, msg, cert_host="sns.us-east-1.amazonaws.com.evil.example")
            out.append((sesp, b, h, 403, f"{tag} ses: SigningCertURL not on amazonaws.com"))
            b, h = self.sns(tenant, msg, cert_host="evil.example")
            out.append((sesp, b, h, 403, f"{tag} ses: SigningCertURL on another host"))
            out.append((sesp, json.dumps(msg), [], 401, f"{tag} ses: raw message delivery, verification on"))
        else:
            b, h = self.sns(tenant, msg, topic="arn:aws:sns:us-east-1:999999999999:someone-elses-topic")
            out.append((sesp, b, h, 403, f"{tag} ses: TopicArn not in ses_topic_arn"))
        return out

    # ---- the whole stream -----------------------------------------------------

    def build(self):
        now = self.now_ms
        base = now - 3 * 3600 * 1000
        t = [base]

        def t0():
            t[0] += self.rng.randint(5, 40) * 1000 + self.rng.randint(0, 999)
            return t[0]

        # campaigns: (name, variants, [(provider, mode, n messages)])
        plans = {
            "acme": [
                ("spring-sale", ["A", "B"], [("sendgrid", "meta", 16), ("mailgun", "meta", 16), ("sparkpost", "meta", 8)]),
                ("welcome", [], [("ses", "meta", 16), ("postmark", "meta", 10), ("ses", "notif", 4)]),
                ("newsletter", ["A", "B", "C"], [("postmark", "meta", 8), ("sparkpost", "meta", 10), ("ses", "meta", 6),
                                                 ("mailgun", "meta", 4), ("sendgrid", "meta", 4)]),
                ("sg-category", [], [("sendgrid", "category", 5)]),
                ("mg-tagged", [], [("mailgun", "tags", 4)]),
                ("shared-promo", [], [("sendgrid", "meta", 6)]),
            ],
            "beta": [
                ("launch", ["A", "B"], [("postmark", "meta", 16), ("sparkpost", "meta", 16), ("mailgun", "meta", 8)]),
                ("digest", [], [("sendgrid", "meta", 16), ("mailgun", "meta", 6)]),
                ("pm-tagged", [], [("postmark", "tag", 4)]),
                ("sp-campaign-id", [], [("sparkpost", "campaign_id", 4)]),
                # UTF-8, blanks, a quote and a slash: attribution is exact, the API takes it percent-encoded
                ("Fête d'hiver 26/27", ["α", "β"], [("postmark", "meta", 6), ("mailgun", "meta", 6), ("sendgrid", "meta", 4)]),
                ("shared-promo", [], [("sparkpost", "meta", 4)]),
            ],
        }
        by_prov = {tn: {} for tn in plans}
        for tn, camps in plans.items():
            for name, variants, provs in camps:
                for prov, mode, n in provs:
                    for _ in range(n):
                        m = self.message(tn, prov, name, variants, mode, t0())
                        by_prov[tn].setdefault(prov, []).append(m)
            # one SES message to three recipients (acme only: beta verifies SNS signatures)
            if tn == "acme":
                for fate in (["eng"], ["bounce_hard"]):
                    m = self.message(tn, "ses", "welcome", [], "meta", t0(), n_rcpt=3, fate=fate)
                    by_prov[tn]["ses"].append(m)
        # tenant isolation: beta's shared-promo also holds the very events acme got
        # (same SendGrid event ids, same addresses): dedupe and uniques are per tenant
        for m in [m for m in self.msgs["acme"] if m["campaign"] == "shared-promo"]:
            mb = dict(m, tenant="beta", events=[])
            for e in m["events"]:
                eb = dict(e, uid=self.next_uid(), msg=mb)
                mb["events"].append(eb)
            self.msgs["beta"].append(mb)
            by_prov["beta"].setdefault("sendgrid", []).append(mb)

        # main phase: per tenant and provider a list of (first request, retries); interleaved
        streams = []
        for tn in plans:
            bp = by_prov[tn]
            camp0 = plans[tn][0][0]
            streams.append(self.stream_sendgrid(tn, bp.get("sendgrid", []), self.dead_sendgrid(tn, camp0)))
            streams.append(self.stream_sparkpost(tn, bp.get("sparkpost", []), self.dead_sparkpost(tn, camp0)))
            streams.append(self.stream_single(tn, "postmark", bp.get("postmark", []), self.dead_postmark(tn, camp0)))
            streams.append(self.stream_single(tn, "mailgun", bp.get("mailgun", []), self.dead_mailgun(tn, camp0)))
            if self.cfg["tenants"][tn]["ses_verify"]:
                assert not bp.get("ses"), "SES messages for a tenant that verifies SNS signatures"

            else:
                streams.append(self.stream_single(tn, "ses", bp.get("ses", []), self.dead_ses(tn, camp0)))
        tenants = list(plans)
        refused = [r for i, tn in enumerate(tenants)
                   for r in self.refused(tn, tenants[1 - i], plans[tn][0][0], plans[tn][0][1][0], "main")]
        queue = []  # (position key, request)
        pos = 0
        pending = []  # retries waiting for their turn: [due position, request]
        cursors = [0] * len(streams)
        while any(c < len(s) for c, s in zip(cursors, streams)) or pending:
            live = [i for i, s in enumerate(streams) if cursors[i] < len(s)]
            due = [p for p in pending if p[0] <= pos]
            if due and (not live or self.rng.random() < 0.5):
                p = due[0]
                pending.remove(p)
                queue.append(p[1])
            elif live:
                i = self.rng.choice(live)
                first, retries = streams[i][cursors[i]]
                cursors[i] += 1
                queue.append(first)
                for r in retries:
                    pending.append([pos + self.rng.randint(1, 25), r])
            else:
                pending.sort(key=lambda p: p[0])
                pos = pending[0][0]
                continue
            pos += 1
            if refused and self.rng.random() < 0.15:
                queue.append(refused.pop(0))
        queue += refused
        for path, body, hdrs, status, note, *items in queue:
            tn = path.rsplit("/", 1)[1]
            self.emit("main", path, body, hdrs, status, note, items[0] if items else (), tn)
        # an unknown tenant and an unknown provider
        self.emit("main", "/v1/webhooks/sendgrid/nosuch", b"[]", [], 404, "unknown tenant")
        self.emit("main", "/v1/webhooks/mandrill/acme", b"[]", [], 404, "unknown provider")
        self.snapshot("main")

        # bad phase: only refused requests, for both tenants and the tenant without credentials
        for i, tn in enumerate(tenants):
            for path, body, hdrs, status, note in self.refused(tn, tenants[1 - i], plans[tn][0][0], plans[tn][0][1][0], "bad"):
                self.emit("bad", path, body, hdrs, status, note, (), tn)
            # a Mailgun request of the main phase, again: its token was accepted
            mg = [p for p in self.plan if p[1] == "main" and p[2] == f"/v1/webhooks/mailgun/{tn}" and p[3] == "200"]
            with open(os.path.join(self.out, "req", mg[0][0] + ".body"), "rb") as f:
                raw = f.read()
            self.emit("bad", mg[0][2], raw, [], 403, "bad mailgun: a request of the main phase, replayed", (), tn)
            b = json.loads(raw)
            # the signature covers only timestamp + token: a captured one on a forged event
            b["event-data"].update(id=self.rid(22), event="delivered")
            b["event-data"].setdefault("user-variables", {})["tally_campaign"] = "forged-campaign"
            self.emit("bad", mg[0][2], json.dumps(b), [], 403,
                      "bad mailgun: a captured signature on a forged event (token already used)", (), tn)
        # over the collector's body limit (--max-body, default 4 MiB), validly signed: refused whole
        m = self.message("acme", "sendgrid", "spring-sale", ["A", "B"], "meta", now - 600000, fate=["eng"])
        one = json.dumps(self.sg_obj(m["events"][0]))
        n = (5 << 20) // len(one) + 1
        body = ("[" + ",".join(one.replace(m["events"][0]["pid"], "%022d" % i) for i in range(n)) + "]").encode()
        self.emit("bad", "/v1/webhooks/sendgrid/acme", body, self.sg_sign(self.cfg["tenants"]["acme"]["sendgrid_key"],
                  self.now_ms // 1000, body), 413, f"bad sendgrid: {len(body)} bytes, over the body limit", (), "acme")
        gamma = self.cfg.get("bare_tenant")
        if gamma:
            for prov, body, st in (("sendgrid", b"[]", 401), ("mailgun", self.mg_body({"mailgun_signing_key": "k"}, None,
                                                                                      ed={"event": "delivered"}), 401),
                                   ("postmark", b"{}", 401), ("sparkpost", b"[]", 401), ("ses", b"{}", 401)):
                hdrs = [self.basic("u:p")] if prov in ("postmark", "sparkpost") else []
                self.emit("bad", f"/v1/webhooks/{prov}/{gamma}", body, hdrs, st,
                          f"bad {prov}: tenant {gamma} has no credential for it", (), gamma)
        self.snapshot("bad")

        # race phase, campaign "race": requests the shell posts race_copies times at once.
        # A signed Mailgun request: one copy passes, the others are replays of its token.
        # A SendGrid batch (a provider retrying while the first try is in flight): every
        # copy is accepted, its events are counted once.
        copies = self.cfg.get("race_copies", 12)
        tc = self.cfg["tenants"]
        for tn in tenants:
            r = {"idx": 2000, "email": f"race@{tn}.example", "rid": "race-1"}
            m = self.message(tn, "mailgun", "race", [], "meta", now - 30000, rcpt=r, fate=["eng"])
            e = [x for x in m["events"] if x["kind"] == "delivered"][0]
            self.emit("race", f"/v1/webhooks/mailgun/{tn}", self.mg_body(tc[tn], e), [], "once",
                      f"race: {copies} copies of a signed Mailgun request at once", [e], tn, copies)
            evs = []
            for i in range(4):
                r = {"idx": 2001 + i, "email": f"race{i}@{tn}.example", "rid": f"race-{i + 2}"}
                evs += self.message(tn, "sendgrid", "race", [], "meta", now - 20000, rcpt=r, fate=["eng"])["events"]
            body = json.dumps([self.sg_obj(x) for x in evs]).encode()
            self.emit("race", f"/v1/webhooks/sendgrid/{tn}", body, self.sg_sign(tc[tn]["sendgrid_key"], now // 1000, body),
                      200, f"race: {copies} copies of a SendGrid batch at once", evs, tn, copies)
        self.snapshot("race")

        # sentinel phase: one accepted SparkPost batch per tenant, 64 recipients (every partition)
        for tn in tenants:
            msgs = []
            for i in range(64):
                r = {"idx": 1000 + i, "email": f"sentinel{i:02d}@{tn}.example", "rid": f"s-{i:02d}"}
                m = self.message(tn, "sparkpost", "sentinel", [], "meta", now - 1000 * (64 - i), rcpt=r, fate=["eng"])
                m["events"] = [e for e in m["events"] if e["kind"] in ("sent", "delivered")] + [
                    self.event(m, "open", r, (now - 1000) // 1000 * 1000)]
                msgs.append(m)
            evs = [e for m in msgs for e in m["events"]]
            body = json.dumps([self.sp_obj(e) for e in evs])
            self.emit("sentinel", f"/v1/webhooks/sparkpost/{tn}", body, self.sp_auth(tn), 200,
                      f"sentinel batch of {len(evs)}", evs, tn)
        self.snapshot("sentinel")

    def write(self):
        with open(os.path.join(self.out, "plan.tsv"), "w") as f:
            for p in self.plan:
                f.write("\t".join(p) + "\n")
        with open(os.path.join(self.out, "expected.json"), "w") as f:
            json.dump({"seed": self.cfg["seed"], "metrics": METRICS, "phases": self.phases}, f, indent=1, sort_keys=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(a.config) as f:
        cfg = json.load(f)
    g = Gen(cfg, a.out)
    g.build()
    g.write()
    kinds = {}
    for tn, ms in g.msgs.items():
        for m in ms:
            for e in m["events"]:
                kinds[(m["provider"], e["kind"])] = kinds.get((m["provider"], e["kind"]), 0) + 1
    missing = [(p, k) for p in ("sendgrid", "mailgun", "postmark", "sparkpost", "ses") for k in CAPS[p] if (p, k) not in kinds]
    if missing:
        print("webhook_payloads: event kinds not covered: %s" % missing, file=sys.stderr)
        return 1
    by = {}
    for p in g.plan:
        by.setdefault((p[1], p[3]), 0)
        by[(p[1], p[3])] += 1
    print("webhook_payloads: seed %s, %d requests (%s), %d logical events" % (
        cfg["seed"], len(g.plan), ", ".join("%s %s: %d" % (ph, st, n) for (ph, st), n in sorted(by.items())),
        sum(len(m["events"]) for ms in g.msgs.values() for m in ms)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
