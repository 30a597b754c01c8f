\set src random(1, :naccounts)
\set dst random(1, :naccounts)
\if :src = :dst
\set dst :dst % :naccounts + 1
\endif
\if :hot
\set src 0
\endif
\set amount random(1, 100)
