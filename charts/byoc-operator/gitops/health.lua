-- Argo CD health of byoc.dev CloudAccounts and ComputeClusters.
-- Healthy: Ready=True for the current generation. Degraded: Stalled=True or
-- phase failed (the user must act; the message says why). Suspended: paused
-- by the byoc.dev/paused annotation. Progressing: everything else.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil then
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local function holds(type)
  return conditions[type] ~= nil and conditions[type].status == "True"
end
local function message(type, fallback)
  local c = conditions[type]
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end
if holds("Paused") then
  hs.status = "Suspended"
  hs.message = message("Paused", "Reconciliation is paused")
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
if holds("Stalled") then
  hs.status = "Degraded"
  hs.message = message("Stalled", "Stalled")
elseif obj.status.phase == "failed" then
  hs.status = "Degraded"
  hs.message = message("Ready", "Failed")
elseif holds("Ready") then
  hs.status = "Healthy"
  hs.message = message("Ready", "Ready")
else
  hs.message = message("Reconciling", message("Ready", "Reconciling"))
end
return hs
