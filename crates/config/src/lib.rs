//! targetcli saveconfig.json model (under construction).
