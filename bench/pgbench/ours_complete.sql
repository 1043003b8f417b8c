-- The end-of-call report of a call in progress (the preloaded pool, each call once):
-- voxanne.complete_call.
SELECT voxanne.complete_call(md5('c' || s.k)::uuid::text, 'asst_bench_' || (s.k % 100), 'customer-ended-call', now() - interval '56 seconds', now(), 56.5, 0.1234, 'Caller booked a cleaning for Tuesday 3pm.', E'User: Hi, I''d like to book a cleaning for Tuesday.\nAI: Sure, what time works for you?', 'https://storage.vapi.ai/rec-' || s.k || '.wav', 'end-of-call-report') FROM (SELECT nextval('bench.pool_seq') AS k) AS s;
