-- Hosts that saw the database unhealthy in the last hour, and when: many hosts at once is the
-- database; one host is that host or its network.
SELECT metadata->>'host' AS host, min(timestamp) AS first_seen, count(*) AS transitions
FROM system_events
WHERE event_type = 'database.health.transition' AND payload->>'to' = 'unhealthy'
  AND timestamp > now() - interval '1 hour'
GROUP BY 1 ORDER BY 2;
