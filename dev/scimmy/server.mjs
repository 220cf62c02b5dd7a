// A second, independent SCIM 2.0 service provider for the tests: SCIMMY
// (npm `scimmy`, `scimmy-routers`, `express` 4) with an in-memory store of
// the tests' own, on 127.0.0.1. Each base URL is one target account:
//
//   http://127.0.0.1:<port>/<profile>/<space>/...    (bearer token: SCIMMY_TOKEN)
//
// where <profile> makes the server behave as that vendor's SCIM
// documentation says (the restrictions below cite it), and <space> is any
// name (a test's own account). `generic` is SCIMMY as it is (RFC 7644).
//
//   GET  /__store/<profile>/<space>    the account as stored, read past every
//                                      restriction (users with `active`,
//                                      groups with their members), and what
//                                      the account was sent (requests, DELETEs)
//   POST /__fault/<profile>/<space>    {"throttle": n}: the next n requests 429
//
// usage: node dev/scimmy/server.mjs <port>
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";
import { randomUUID } from "node:crypto";

const PORT = Number(process.argv[2] ?? 5190);
const TOKEN = process.env.SCIMMY_TOKEN ?? "scimmy_entitle_local";
const PROFILES = ["generic", "aws-identity-center", "slack", "github-emu", "google", "atlassian", "salesforce"];

/** One target account: its users and groups, and what it was sent. */
class Space {
    users = new Map();
    groups = new Map();
    log = [];
    deletes = 0;
    throttle = 0;
    /** Slack: one write at a time per group. */
    busy = new Set();
    /** Slack, GitHub: writes in the current minute / hour window. */
    window = { start: Date.now(), writes: 0, creates: 0 };
}
const spaces = new Map();
function space(profile, name) {
    const key = `${profile}/${name}`;
    if (!spaces.has(key)) spaces.set(key, new Space());
    return spaces.get(key);
}

const now = () => new Date().toISOString();
const meta = (type, old) => ({ resourceType: type, created: old?.meta?.created ?? now(), lastModified: now(), version: `W/"${randomUUID()}"` });

/** SCIM's own error shape. */
function scimError(res, status, detail, scimType) {
    res.status(status).type("application/scim+json").send({ schemas: ["urn:ietf:params:scim:api:messages:2.0:Error"], status: String(status), detail, ...(scimType ? { scimType } : {}) });
}

// The store behind SCIMMY: plain handlers over the request's space.
SCIMMY.Resources.declare(SCIMMY.Resources.User)
    .ingress((resource, instance, ctx) => {
        const s = ctx.space;
        const name = String(instance.userName ?? "").toLowerCase();
        const clash = [...s.users.values()].find((u) => u.userName.toLowerCase() === name && u.id !== resource.id && !u.hidden);
        if (clash) throw new SCIMMY.Types.Error(409, "uniqueness", `userName ${instance.userName} is taken`);
        const old = resource.id ? s.users.get(resource.id) : undefined;
        if (resource.id && (!old || old.hidden)) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
        const id = resource.id ?? randomUUID();
        const user = { ...JSON.parse(JSON.stringify(instance)), id, meta: meta("User", old) };
        if (user.active === undefined) user.active = true;
        s.users.set(id, user);
        return user;
    })
    .egress((resource, ctx) => {
        const s = ctx.space;
        if (resource.id) {
            const u = s.users.get(resource.id);
            if (!u || u.hidden) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
            return u;
        }
        const all = [...s.users.values()].filter((u) => !u.hidden);
        return resource.filter ? resource.filter.match(all) : all;
    })
    .degress((resource, ctx) => {
        const s = ctx.space;
        const u = s.users.get(resource.id);
        if (!u || u.hidden) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
        s.deletes += 1;
        switch (ctx.profile) {
            // "Users can not be permanently deleted from Slack, they can only be
            // deactivated." https://docs.slack.dev/reference/scim-api
            case "slack":
            // Salesforce: DELETE on a user is the same as setting active=false (users
            // are deactivated, never deleted). https://help.salesforce.com/s/articleView?id=sf.identity_scim_manage_users.htm
            case "salesforce":
                u.active = false;
                u.meta = meta("User", u);
                break;
            // Atlassian: DELETE deactivates the user and removes it from SCIM (it
            // cannot be brought back through SCIM: re-create it).
            // https://developer.atlassian.com/cloud/admin/user-provisioning/rest/api-group-users/#api-scim-directories-directoryid-users-userid-delete
            case "atlassian":
                u.active = false;
                u.hidden = true;
                break;
            // GitHub EMU: "Suspends a SCIM user permanently ... This action is
            // irreversible." https://docs.github.com/en/rest/enterprise-admin/scim
            default:
                s.users.delete(resource.id);
                for (const g of s.groups.values()) g.members = (g.members ?? []).filter((m) => m.value !== resource.id);
        }
    });

SCIMMY.Resources.declare(SCIMMY.Resources.Group)
    .ingress((resource, instance, ctx) => {
        const s = ctx.space;
        const old = resource.id ? s.groups.get(resource.id) : undefined;
        if (resource.id && !old) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
        const clash = [...s.groups.values()].find((g) => g.displayName === instance.displayName && g.id !== resource.id);
        if (clash) throw new SCIMMY.Types.Error(409, "uniqueness", `group ${instance.displayName} exists`);
        // Atlassian: renaming a synced group is not supported.
        // https://support.atlassian.com/provisioning-users/docs/understand-user-provisioning/
        if (ctx.profile === "atlassian" && old && old.displayName !== instance.displayName) throw new SCIMMY.Types.Error(400, "mutability", "group names cannot be changed");
        // Members are users of this account, each once.
        const members = [...new Set((instance.members ?? []).map((m) => m.value))].filter((v) => s.users.has(v) && !s.users.get(v).hidden).map((value) => ({ value }));
        const id = resource.id ?? randomUUID();
        const group = { ...JSON.parse(JSON.stringify(instance)), members, id, meta: meta("Group", old) };
        s.groups.set(id, group);
        return group;
    })
    .egress((resource, ctx) => {
        const s = ctx.space;
        if (resource.id) {
            const g = s.groups.get(resource.id);
            if (!g) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
            return g;
        }
        const all = [...s.groups.values()];
        return resource.filter ? resource.filter.match(all) : all;
    })
    .degress((resource, ctx) => {
        if (!ctx.space.groups.delete(resource.id)) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
    });

/** The filter's expressions (SCIMMY's parser): an array of OR'd objects of AND'd attributes. */
function parsed(filter) {
    try {
        return JSON.parse(JSON.stringify(new SCIMMY.Types.Filter(filter)));
    } catch {
        return null;
    }
}

/** `attr eq "v"` terms only, ANDed (no `or`, no other operator, no value path): the attributes, or null. */
function eqOnly(filter) {
    const p = parsed(filter);
    if (!p || p.length !== 1) return null;
    const terms = {};
    for (const [attr, cmp] of Object.entries(p[0])) {
        if (!Array.isArray(cmp) || cmp[0] !== "eq") return null;
        terms[attr] = cmp[1];
    }
    return terms;
}

const same = (a, b) => a.length === b.length && [...a].sort().every((x, i) => x === [...b].sort()[i]);

/** The membership changes a group PATCH makes: [{add|remove, value}] and whether any op replaces members. */
function memberChanges(body) {
    const out = [];
    let replaces = false;
    for (const op of body?.Operations ?? []) {
        const kind = String(op.op ?? "").toLowerCase();
        const path = String(op.path ?? "");
        if (kind === "replace" && (path === "members" || (!op.path && op.value?.members))) replaces = true;
        if (path.startsWith("members[")) {
            const p = parsed(path.slice("members[".length, -1)) ?? [];
            for (const term of p) out.push({ kind, value: term.value?.[1] });
        } else if (path === "members") {
            const values = Array.isArray(op.value) ? op.value : op.value?.members ?? (op.value ? [op.value] : []);
            for (const v of values) out.push({ kind, value: v?.value });
            if (kind === "remove" && values.length === 0) replaces = true;
        }
    }
    return { changes: out, replaces };
}

/** What each profile refuses or changes before SCIMMY sees a request, as the vendor documents it. */
const restrictions = {
    // AWS IAM Identity Center SCIM implementation developer guide:
    // https://docs.aws.amazon.com/singlesignon/latest/developerguide/what-is-scim.html
    "aws-identity-center"(req, res, s) {
        const isGroups = req.path.startsWith("/Groups");
        // ListUsers: "startIndex, attributes, and excludedAttributes" are not
        // supported (despite being listed in the SCIM protocol): ignored here.
        // https://docs.aws.amazon.com/singlesignon/latest/developerguide/listusers.html
        for (const q of ["startIndex", "attributes", "excludedAttributes"]) delete req.query[q];
        if (req.method === "GET" && req.query.filter !== undefined) {
            // "Only eq with and is supported. We currently do not support any other filters."
            const terms = eqOnly(req.query.filter);
            if (!terms) return scimError(res, 400, "ValidationException: only eq (with and) is supported", "invalidFilter");
            const keys = Object.keys(terms);
            const allowed = isGroups ? [["displayName"], ["externalId"], ["id", "members"]] : [["userName"], ["externalId"], ["id"]];
            if (!allowed.some((a) => same(a, keys))) return scimError(res, 400, `ValidationException: filter on ${keys.join(" and ")} is not supported`, "invalidFilter");
            // ListGroups with (id and member): the group when the user is a member of it.
            if (isGroups && keys.includes("members")) {
                const g = s.groups.get(terms.id);
                if (!g || !(g.members ?? []).some((m) => m.value === terms.members)) return res.type("application/scim+json").send(list([]));
                return res.type("application/scim+json").send(list([{ ...g, members: [] }]));
            }
        }
        if (req.method === "PATCH" && isGroups) {
            // "A maximum of 100 membership changes are allowed in a single request";
            // "replace or remove all group memberships ... will be a ValidationException".
            // https://docs.aws.amazon.com/singlesignon/latest/developerguide/patchgroup.html
            const { changes, replaces } = memberChanges(req.body);
            if (replaces) return scimError(res, 400, "ValidationException: replacing or removing all members is not supported", "invalidValue");
            if (changes.length > 100) return scimError(res, 400, "ValidationException: at most 100 membership changes per request", "tooMany");
        }
        // "GetGroup and ListGroups return an empty member list."
        // https://docs.aws.amazon.com/singlesignon/latest/developerguide/getgroup.html
        if (isGroups) res.entitleMap = (body) => stripMembers(body);
        // At most 100 a page; "Including the cursor parameter changes the
        // default response format from non-paginated (with totalResults,
        // startIndex, and itemsPerPage fields) to cursor-based paginated results".
        if (req.method === "GET" && /^\/(Users|Groups)\/?$/.test(req.path)) return cursorPage(req, res, s, isGroups, 100);
    },
    // Slack SCIM API: https://docs.slack.dev/reference/scim-api and .../scim-api/rate-limits
    slack(req, res, s) {
        if (["POST", "PUT", "PATCH", "DELETE"].includes(req.method)) {
            // "600 writes per minute" across the organisation; 429 with Retry-After.
            if (!windowAllows(s, "writes", 600, 60_000)) return tooMany(res, 60);
        }
        if (req.path.startsWith("/Users") && ["POST", "PUT"].includes(req.method) && req.body?.userName !== undefined) {
            // "Max of 21 characters. Support periods ., underscores _, and hyphens -.
            // All other special characters are converted to underscores."
            const converted = String(req.body.userName).replace(/[^A-Za-z0-9._-]/g, "_");
            if (converted.length > 21) return scimError(res, 400, "username_too_long: max length is 21", "invalidValue");
            req.body.userName = converted;
        }
        if (req.method === "PATCH" && req.path.startsWith("/Groups")) {
            // Removing a member: `members[value eq U123]`, one member an operation.
            for (const op of req.body?.Operations ?? []) {
                if (String(op.path ?? "").startsWith("members[") && / or /i.test(op.path)) return scimError(res, 400, "invalid_filter: one member per operation", "invalidFilter");
            }
            // "only allows one update to a user or group at a time": a parallel write is refused (429).
            const id = req.path.split("/")[2];
            if (s.busy.has(id)) return tooMany(res, 1);
            s.busy.add(id);
            res.on("finish", () => s.busy.delete(id));
        }
    },
    // GitHub EMU SCIM: https://docs.github.com/en/rest/enterprise-admin/scim
    "github-emu"(req, res, s) {
        // "GitHub will reject requests without this header."
        if (!req.get("User-Agent")) return scimError(res, 403, "a User-Agent header is required");
        // "do not assign more than 1,000 users per hour".
        if (req.method === "POST" && req.path.startsWith("/Users") && !windowAllows(s, "creates", 1000, 3_600_000)) return tooMany(res, 3600);
        if (req.method === "GET" && req.query.filter !== undefined) {
            // "Multiple filters are not supported."
            const terms = eqOnly(req.query.filter);
            if (!terms || Object.keys(terms).length !== 1) return scimError(res, 400, "one eq filter at a time", "invalidFilter");
        }
    },
    // Google Cloud Identity SCIM: https://docs.cloud.google.com/identity/docs/scim/reference/rest
    google(req, res, s) {
        const isGroups = req.path.startsWith("/Groups");
        if (req.method === "GET" && /^\/(Users|Groups)\/?$/.test(req.path)) {
            // "Requests must specify a filter. Requests without a filter parameter return a tooMany error."
            if (req.query.filter === undefined) return scimError(res, 400, "a filter is required", "tooMany");
            // Users: "only supports equality on userName"; Groups: "only supports equality on displayName ... or externalId".
            const terms = eqOnly(req.query.filter);
            const allowed = isGroups ? [["displayName"], ["externalId"]] : [["userName"]];
            if (!terms || !allowed.some((a) => same(a, Object.keys(terms)))) return scimError(res, 400, "unsupported filter", "invalidFilter");
            // "Neither index-based ... nor cursor-based ... pagination is supported";
            // "If there are more than 50 group matches, only the first 50 results will be returned."
            delete req.query.startIndex;
            req.query.count = isGroups ? "50" : "100";
        }
        if (req.method === "PATCH" && isGroups) {
            // "A maximum of 1 member addition or removal is supported per Group patch request";
            // "A maximum of 2 operations"; remove "requires a value filter using the eq operator on the value sub-attribute".
            const { changes, replaces } = memberChanges(req.body);
            if (replaces || changes.length > 1 || (req.body?.Operations ?? []).length > 2) return scimError(res, 400, "at most one member change and two operations per request", "tooMany");
            for (const op of req.body?.Operations ?? []) {
                if (String(op.op).toLowerCase() === "remove" && op.path === "members") return scimError(res, 400, "remove needs members[value eq \"id\"]", "noTarget");
            }
        }
        // Group.members: "This attribute is not currently returned."
        if (isGroups) res.entitleMap = (body) => stripMembers(body);
    },
    // Atlassian user provisioning (SCIM): groups are found by displayName only.
    // https://developer.atlassian.com/cloud/admin/user-provisioning/rest/api-group-groups/
    atlassian(req, res) {
        if (req.method === "GET" && req.path.startsWith("/Groups") && req.query.filter !== undefined) {
            const terms = eqOnly(req.query.filter);
            if (!terms || !same(Object.keys(terms), ["displayName"])) return scimError(res, 400, "groups are filtered by displayName eq only", "invalidFilter");
        }
    },
    // Salesforce SCIM: group members are added and removed as
    // {"path": "members", "value": {"members": [...]}}.
    // https://help.salesforce.com/s/articleView?id=sf.identity_scim_manage_groups.htm
    salesforce(req, res) {
        if (req.method === "PATCH" && req.path.startsWith("/Groups")) {
            for (const op of req.body?.Operations ?? []) {
                const kind = String(op.op ?? "").toLowerCase();
                if ((kind === "add" || kind === "remove") && String(op.path ?? "").startsWith("members") && !(op.path === "members" && Array.isArray(op.value?.members))) {
                    return scimError(res, 400, "members are changed with path members and value {members: [...]}", "invalidPath");
                }
            }
            // SCIMMY's own PatchOp removes by value filter: the documented form, rewritten for it.
            req.body.Operations = req.body.Operations.flatMap((op) => {
                const kind = String(op.op ?? "").toLowerCase();
                if (op.path !== "members" || !Array.isArray(op.value?.members)) return [op];
                if (kind === "add") return [{ op: "add", path: "members", value: op.value.members }];
                return op.value.members.map((m) => ({ op: "remove", path: `members[value eq ${JSON.stringify(m.value)}]` }));
            });
        }
    },
    generic() {},
};

function list(resources) {
    return { schemas: ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], totalResults: resources.length, itemsPerPage: resources.length, startIndex: 1, Resources: resources };
}

function stripMembers(body) {
    if (body?.Resources) return { ...body, Resources: body.Resources.map((g) => ({ ...g, members: [] })) };
    if (body?.displayName !== undefined) return { ...body, members: [] };
    return body;
}

/** AWS-style cursor paging over the (filtered) collection. */
function cursorPage(req, res, s, isGroups, max) {
    const count = Math.min(Number(req.query.count ?? max) || max, max);
    let all = [...(isGroups ? s.groups : s.users).values()].filter((r) => !r.hidden);
    if (req.query.filter !== undefined) all = new SCIMMY.Types.Filter(req.query.filter).match(all);
    const start = req.query.cursor ? Number(Buffer.from(String(req.query.cursor), "base64url").toString()) || 0 : 0;
    const page = all.slice(start, start + count).map((r) => (isGroups ? { ...r, members: [] } : r));
    if (req.query.cursor === undefined) {
        return res.type("application/scim+json").send({ ...list(page), totalResults: all.length });
    }
    const next = start + count < all.length ? Buffer.from(String(start + count)).toString("base64url") : undefined;
    res.type("application/scim+json").send({ schemas: ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], itemsPerPage: page.length, Resources: page, ...(next ? { nextCursor: next } : {}) });
}

function windowAllows(s, what, max, ms) {
    if (Date.now() - s.window.start > ms) s.window = { start: Date.now(), writes: 0, creates: 0 };
    s.window[what] += 1;
    return s.window[what] <= max;
}

function tooMany(res, secs) {
    res.set("Retry-After", String(secs));
    return scimError(res, 429, "rate limited");
}

const app = express();
app.use(express.json({ type: ["application/json", "application/scim+json"], limit: "8mb" }));

app.get("/__store/:profile/:space", (req, res) => {
    const s = space(req.params.profile, req.params.space);
    res.send({ users: [...s.users.values()], groups: [...s.groups.values()], requests: s.log, deletes: s.deletes });
});
app.post("/__fault/:profile/:space", (req, res) => {
    space(req.params.profile, req.params.space).throttle = Number(req.body?.throttle ?? 0);
    res.send({ ok: true });
});

app.use("/:profile/:space", (req, res, next) => {
    const { profile } = req.params;
    if (!PROFILES.includes(profile)) return scimError(res, 404, `no profile ${profile}`);
    if (req.get("Authorization") !== `Bearer ${TOKEN}`) return scimError(res, 401, "invalid token");
    const s = space(profile, req.params.space);
    s.log.push(`${req.method} ${req.path}${req.query.filter ? ` filter=${req.query.filter}` : ""}`);
    if (s.throttle > 0) {
        s.throttle -= 1;
        return tooMany(res, 1);
    }
    req.entitle = { profile, space: s };
    // Answers the restrictions reshape (members stripped) pass through res.entitleMap.
    const send = res.send.bind(res);
    res.send = (body) => {
        if (res.entitleMap && body && typeof body === "object") body = res.entitleMap(JSON.parse(JSON.stringify(body)));
        return send(body);
    };
    if (restrictions[profile](req, res, s) === undefined && !res.headersSent) next();
});

app.use("/:profile/:space", new SCIMMYRouters({
    type: "bearer",
    handler: () => "entitle",
    context: (req) => req.entitle,
}));

app.listen(PORT, "127.0.0.1", () => console.log(`scimmy: listening on 127.0.0.1:${PORT} (profiles: ${PROFILES.join(", ")})`));
