-- wrk script for bench/run's relay section: POSTs real-format Vapi bodies (a template from
-- bench/messages with @ID@, @ASST@, @PHONE@, @TS@ placeholders) to voxanne-relay, shared-secret
-- authentication, each request a distinct message so none is a duplicate:
--   status      a new call's ringing status-update (random uuid call id, random agent)
--   transcript  a final transcript line on one of the 500 calls in progress that get no lists (random moment)
-- usage: wrk ... -s relay.lua URL -- <template.json> <status|transcript> <secret> <live ids file>
-- (the live ids file holds "k md5('live' || k)::uuid" lines, written by bench/run)

local counter = 0
local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

local template, kind, secret, template_ids_path

function init(args)
   local f = assert(io.open(args[1], "rb"))
   template = f:read("*a"):gsub("%s+$", "")
   f:close()
   kind = args[2]
   secret = args[3]
   template_ids_path = args[4]
   math.randomseed(os.time() * 1000 + tid * 7919 + math.floor(os.clock() * 1e6))
   wrk.method = "POST"
   wrk.headers["content-type"] = "application/json"
   wrk.headers["x-vapi-secret"] = secret
end

local function hex(n)
   local t = {}
   for i = 1, n do t[i] = string.format("%x", math.random(0, 15)) end
   return table.concat(t)
end

-- md5('live' || k)::uuid::text is not computed here (no md5 in wrk's LuaJIT): bench/run writes
-- the live call ids (0-499, those of ours_hvm_transcript) to a file.
local live = nil

local function live_ids()
   if live == nil then
      live = {}
      local f = assert(io.open(template_ids_path, "rb"))
      for line in f:lines() do
         local k, id = line:match("^(%d+)%s+(%S+)$")
         table.insert(live, { k = tonumber(k), id = id })
      end
      f:close()
   end
   return live
end

function request()
   counter = counter + 1
   local body
   if kind == "status" then
      local id = string.format("%s-%s-4%s-a%s-%s", hex(8), hex(4), hex(3), hex(3), hex(12))
      local agent = math.random(0, 99)
      body = template:gsub("@ID@", id)
         :gsub("@ASST@", "asst_bench_" .. agent)
         :gsub("@PHONE@", string.format("+1555%07d", math.random(0, 1999)))
   else
      local ids = live_ids()
      local call = ids[math.random(1, #ids)]
      -- epoch milliseconds with microseconds, as Vapi sends them
      local ts = string.format("%d.%03d", 1767225600000 + math.random(0, 2000000000) * 4 + tid,
                               math.random(0, 999))
      body = template:gsub("@ID@", call.id)
         :gsub("@ASST@", "asst_bench_" .. (call.k % 100))
         :gsub("@PHONE@", "+15550000001")
         :gsub("@TS@", ts)
   end
   return wrk.format(nil, nil, nil, body)
end

local bad = 0

function response(status, headers, body)
   if status ~= 200 then
      bad = bad + 1
      if bad <= 3 then io.stderr:write("relay answered " .. status .. ": " .. body .. "\n") end
   end
end
