-- Per minute, how many hosts went unhealthy: a spike across the fleet is the database.
SELECT date_trunc('minute', timestamp) AS minute, count(DISTINCT metadata->>'host') AS hosts
FROM system_events
WHERE event_type = 'database.health.transition' AND payload->>'to' = 'unhealthy'
GROUP BY 1 ORDER BY 1 DESC LIMIT 60;
