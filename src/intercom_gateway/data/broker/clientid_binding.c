/*
 * clientid_binding: a Mosquitto 2.0 plugin (plugin API version 5) that binds MQTT
 * client ids to broker accounts.
 *
 * Mosquitto lets any authenticated account connect with any client id, and the
 * newcomer takes over the session of that id: with a clean start it erases the
 * session and every message queued for it (issue 13: 294 of 433 queued events of the
 * gateway lost to another account's connection). Neither acl_file nor
 * use_username_as_clientid (one connection per account) fits, so this plugin refuses
 * a CONNECT whose client id is neither the username itself nor "<username>." followed
 * by anything. Account names never contain a dot, so no account's ids can be the
 * prefix of another's.
 *
 * An acceptable id is not yet an authenticated one: the plugin then answers
 * MOSQ_ERR_PLUGIN_DEFER and Mosquitto's password_file checks the password as before.
 * A connection without a username is deferred too (allow_anonymous false refuses it).
 *
 * Built by intercom_gateway.broker_plugin with the system C compiler against Debian's
 * mosquitto-dev and libmosquitto-dev headers; it links against nothing but the broker.
 */
#include <stdio.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

static mosquitto_plugin_id_t *plugin_id = NULL;

static int id_belongs_to(const char *client_id, const char *username)
{
	size_t length = strlen(username);
	if(strncmp(client_id, username, length) != 0){
		return 0;
	}
	return client_id[length] == '\0' || client_id[length] == '.';
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	const char *client_id;
	(void)event;
	(void)userdata;

	if(auth->username == NULL || auth->username[0] == '\0'){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	client_id = mosquitto_client_id(auth->client);
	if(client_id != NULL && id_belongs_to(client_id, auth->username)){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	mosquitto_log_printf(MOSQ_LOG_WARNING,
			"clientid_binding: refused client id '%s' for account '%s' "
			"(an account may use only '<account>' or '<account>.<suffix>')",
			client_id ? client_id : "", auth->username);
	return MOSQ_ERR_AUTH;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
}
