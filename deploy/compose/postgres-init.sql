-- One database per service (the account database is created by the image from POSTGRES_DB).
CREATE DATABASE accounting OWNER carbon;
CREATE DATABASE rating OWNER carbon;
CREATE DATABASE disclosure OWNER carbon;
